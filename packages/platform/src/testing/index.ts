import { randomBytes } from "node:crypto";
import { ConnectError } from "@connectrpc/connect";
import postgres from "postgres";
import { type Database, type DatabaseOptions, openDatabase } from "../database.js";

export * from "./issuer.js";

/**
 * Where tests get their databases. With DATABASE_URL set, or a Postgres answering on
 * 127.0.0.1:5432, each test file gets a fresh database on that server (created here, dropped
 * after). Otherwise url is undefined and services fall back to an in-memory PGlite.
 * THINMESH_TEST_DB=pglite forces the embedded database even where a server runs.
 */
export interface TestDatabase {
  kind: "postgres" | "pglite";
  /** postgres:// URL of the new database; undefined for PGlite. */
  url: string | undefined;
  drop(): Promise<void>;
}

const defaultAdminUrl = "postgres://postgres@127.0.0.1:5432/postgres";
let adminUrlProbe: Promise<string | undefined> | undefined;

/** The server tests create databases on, or undefined when none is reachable. */
export function testPostgresUrl(): Promise<string | undefined> {
  adminUrlProbe ??= (async () => {
    if (process.env.THINMESH_TEST_DB === "pglite") return undefined;
    const url = process.env.DATABASE_URL ?? defaultAdminUrl;
    const sql = postgres(url, { max: 1, connect_timeout: 2, onnotice: () => {} });
    try {
      await sql`select 1`;
      return url;
    } catch (error) {
      if (process.env.DATABASE_URL || process.env.THINMESH_TEST_DB === "postgres") {
        throw new Error(
          `cannot reach the test Postgres at DATABASE_URL: ${(error as Error).message}`,
        );
      }
      return undefined;
    } finally {
      await sql.end({ timeout: 1 });
    }
  })();
  return adminUrlProbe;
}

export async function createTestDatabase(label = "test"): Promise<TestDatabase> {
  const adminUrl = await testPostgresUrl();
  if (!adminUrl) return { kind: "pglite", url: undefined, drop: async () => {} };
  const name = `thinmesh_${label.replace(/\W/g, "_")}_${randomBytes(4).toString("hex")}`;
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {} });
  await admin.unsafe(`create database "${name}"`);
  await admin.end();
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return {
    kind: "postgres",
    url: url.toString(),
    async drop() {
      const sql = postgres(adminUrl, { max: 1, onnotice: () => {} });
      await sql.unsafe(`drop database if exists "${name}" with (force)`);
      await sql.end();
    },
  };
}

/** Environment for starting a service in a test: a free port on loopback, quiet logs. */
export function testEnv(database: TestDatabase, extra: Record<string, string> = {}) {
  return {
    PORT: "0",
    HOST: "127.0.0.1",
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? "silent",
    SHUTDOWN_GRACE_MS: "2000",
    ...(database.url ? { DATABASE_URL: database.url } : {}),
    ...extra,
  };
}

/** The ConnectError a call fails with; fails the test if the call succeeds. */
export async function rpcError(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (error) {
    return ConnectError.from(error);
  }
  throw new Error("expected the call to fail, but it succeeded");
}

/**
 * A fresh database with a service's migrations applied, for testing its store and domain
 * without the service around them. close() closes and drops it.
 */
export async function openTestDatabase<TSchema extends Record<string, unknown>>(
  label: string,
  options: Pick<DatabaseOptions<TSchema>, "schema" | "migrationsFolder">,
): Promise<Database<TSchema> & { testDatabase: TestDatabase }> {
  const testDatabase = await createTestDatabase(label);
  const database = await openDatabase({ url: testDatabase.url, poolSize: 4, ...options });
  await database.migrate();
  return {
    ...database,
    testDatabase,
    async close() {
      await database.close();
      await testDatabase.drop();
    },
  };
}
