import { randomBytes, randomUUID } from "node:crypto";
import { type RunningService, type ServiceDefinition, startService } from "@thinmesh/platform";
import {
  createTestDatabase,
  openTestDatabase,
  type TestDatabase,
  testEnv,
} from "@thinmesh/platform/testing";
import { count } from "drizzle-orm";
import type { authConfigSchema } from "../src/config.js";
import { type AuthSchema, refreshTokens, users } from "../src/db/schema.js";
import { createKeyEncryption } from "../src/domain/key-encryption.js";
import type { UserRecord } from "../src/domain/ports.js";
import { authDatabase, authService, createAuth } from "../src/service.js";
import { createAuthStore } from "../src/store.js";

/** A KEK for domain tests (the service's own comes from its environment). */
export const testKeyEncryption = createKeyEncryption({ current: randomBytes(32) });

/** An email no other test uses, so tests sharing one database stay independent. */
export const uniqueEmail = (tag = "user") => `${tag}-${randomUUID().slice(0, 8)}@example.com`;

export interface AuthUnderTest {
  service: RunningService;
  database: TestDatabase;
  /** The running service's own domain objects and database, for setup and assertions. */
  internals: ReturnType<typeof createAuth> & {
    db: Parameters<typeof createAuth>[0]["database"]["db"];
  };
  /** Rows in the tables requests write to, to show a rejected request wrote nothing. */
  rowCounts(): Promise<{ users: number; refreshTokens: number }>;
  stop(): Promise<void>;
}

/** Starts the auth service on a free port with a fresh database, as in production. */
export async function startAuth(
  label: string,
  env: Record<string, string> = {},
): Promise<AuthUnderTest> {
  const database = await createTestDatabase(label);
  let internals: AuthUnderTest["internals"] | undefined;
  const definition: ServiceDefinition<typeof authConfigSchema, AuthSchema> = {
    ...authService,
    create(deps) {
      const auth = createAuth(deps);
      internals = { ...auth, db: deps.database.db };
      return auth.parts;
    },
  };
  const service = await startService(definition, testEnv(database, env));
  await service.ready;
  const db = internals!.db;
  return {
    service,
    database,
    internals: internals!,
    async rowCounts() {
      const [u] = await db.select({ n: count() }).from(users);
      const [r] = await db.select({ n: count() }).from(refreshTokens);
      return { users: u!.n, refreshTokens: r!.n };
    },
    async stop() {
      await service.stop();
      await database.drop();
    },
  };
}

/** A clock tests move by hand. */
export function manualClock(start = new Date()) {
  let at = start.getTime();
  return {
    now: () => new Date(at),
    advance(ms: number) {
      at += ms;
    },
  };
}

/** The domain's store over a fresh, migrated database, without the service around it. */
export async function openTestStore(label: string) {
  const database = await openTestDatabase(label, authDatabase);
  const store = createAuthStore(database.db);
  return {
    store,
    db: database.db,
    /** A user to hang refresh tokens on. */
    async newUser(roles = ["customer"]): Promise<UserRecord> {
      const user = {
        id: randomUUID(),
        email: uniqueEmail(),
        passwordHash: "scrypt$1024$8$1$c2FsdA$aGFzaA",
        roles,
        createdAt: new Date(),
      };
      if (!(await store.insertUser(user))) throw new Error("test user not inserted");
      return user;
    },
    close: () => database.close(),
  };
}
