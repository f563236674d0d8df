import { randomBytes } from "node:crypto";
import { ConnectError } from "@connectrpc/connect";
import type { z } from "zod";
import { connectPostgres, type Database, type DatabaseOptions, openDatabase } from "../database.js";
import { DomainError } from "../errors.js";
import { type RunningService, type ServiceDefinition, startService } from "../service.js";
import { createTestIssuer, type TestIssuer } from "./issuer.js";

export * from "./events.js";
export * from "./issuer.js";
export * from "./peers.js";
export * from "./postgres-proxy.js";

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
    const sql = connectPostgres(url, { max: 1, connect_timeout: 2, onnotice: () => {} });
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
  const admin = connectPostgres(adminUrl, { max: 1, onnotice: () => {} });
  await admin.unsafe(`create database "${name}"`);
  await admin.end();
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return {
    kind: "postgres",
    url: url.toString(),
    async drop() {
      const sql = connectPostgres(adminUrl, { max: 1, onnotice: () => {} });
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
 * The DomainError a call fails with: what a promise rejects with, or what a function throws.
 * Fails the test if the call succeeds; any other error is thrown on as it is.
 */
export function domainError(call: Promise<unknown>): Promise<DomainError>;
export function domainError(call: () => unknown): DomainError;
export function domainError(
  call: Promise<unknown> | (() => unknown),
): DomainError | Promise<DomainError> {
  const succeeded = (): never => {
    throw new Error("expected a DomainError, but the call succeeded");
  };
  const failed = (error: unknown): DomainError => {
    if (error instanceof DomainError) return error;
    throw error;
  };
  if (typeof call !== "function") return call.then(succeeded, failed);
  let result: unknown;
  try {
    result = call();
  } catch (error) {
    return failed(error);
  }
  if (result instanceof Promise) throw new Error("domainError: pass the promise, not a function");
  return succeeded();
}

/**
 * Runs `check` until it stops throwing (an unmet expect throws) and returns its result; after
 * `timeoutMs` the last failure is the test's. For what happens in the background, such as an
 * outbox relay delivering.
 */
export async function eventually<T>(check: () => Promise<T> | T, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await check();
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
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

/** A service started by startTestService, with what it was started with. */
export interface TestService<TSchema extends Record<string, unknown>> {
  service: RunningService<TSchema>;
  /** The issuer whose tokens the service trusts. */
  issuer: TestIssuer;
  testDatabase: TestDatabase;
  /** Stops the service, drops its database and stops the issuer. */
  stop(): Promise<void>;
}

/**
 * A service as its tests run it: on a free loopback port with a fresh database, trusting a
 * new test issuer's keys (AUTH_JWKS_URL), with `env` on top. Resolves once it is ready.
 */
export async function startTestService<
  TSchemaShape extends z.ZodObject,
  TSchema extends Record<string, unknown>,
>(
  definition: ServiceDefinition<TSchemaShape, TSchema>,
  label: string,
  env: Record<string, string> = {},
): Promise<TestService<TSchema>> {
  const issuer = await createTestIssuer();
  const testDatabase = await createTestDatabase(label);
  const service = await startService(
    definition,
    testEnv(testDatabase, { AUTH_JWKS_URL: issuer.jwksUrl, ...env }),
  );
  await service.ready;
  return {
    service,
    issuer,
    testDatabase,
    async stop() {
      await service.stop();
      await testDatabase.drop();
      await issuer.close();
    },
  };
}
