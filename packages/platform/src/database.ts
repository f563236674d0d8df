import { AsyncLocalStorage } from "node:async_hooks";
import { getTableColumns, type SQL, sql, type Table } from "drizzle-orm";
import { type PgDatabase, PgDialect, type PgQueryResultHKT } from "drizzle-orm/pg-core";
import { drizzle as drizzlePostgres } from "drizzle-orm/postgres-js";
import { migrate as migratePostgres } from "drizzle-orm/postgres-js/migrator";
import postgres from "postgres";

/** A drizzle database over either driver; services code against this type only. */
export type AppDatabase<TSchema extends Record<string, unknown>> = PgDatabase<
  PgQueryResultHKT,
  TSchema
>;
/** The handle inside db.transaction(). Inside a transaction, use it and never the db. */
export type AppTransaction<TSchema extends Record<string, unknown>> = Parameters<
  Parameters<AppDatabase<TSchema>["transaction"]>[0]
>[0];
/** Either: functions that may run inside or outside a transaction take this. */
export type Executor<TSchema extends Record<string, unknown>> =
  | AppDatabase<TSchema>
  | AppTransaction<TSchema>;

export interface DatabaseOptions<TSchema extends Record<string, unknown>> {
  /** postgres:// URL; without it an embedded PGlite database is used. */
  url?: string | undefined;
  /** PGlite data directory; in memory when unset. Ignored with a url. */
  dataDir?: string | undefined;
  schema: TSchema;
  /** drizzle-kit's output folder (with meta/_journal.json). */
  migrationsFolder: string;
  /** Connections in the pool (postgres only). */
  poolSize?: number;
}

export interface Database<TSchema extends Record<string, unknown>> {
  readonly kind: "postgres" | "pglite";
  readonly db: AppDatabase<TSchema>;
  /** Applies pending migrations; safe when several replicas start at once. */
  migrate(): Promise<void>;
  /** Resolves when the database answers a query. */
  ping(): Promise<void>;
  close(): Promise<void>;
}

// Any constant works: advisory locks are scoped to one database, and each service has its own.
const migrationLockKey = 7_246_175_931;

export async function openDatabase<TSchema extends Record<string, unknown>>(
  options: DatabaseOptions<TSchema>,
): Promise<Database<TSchema>> {
  return options.url ? openPostgres(options.url, options) : openPglite(options);
}

/**
 * Seconds before a pool connection that failed connects again: 25–50 ms, doubling per failure,
 * at most 0.25–0.5 s. postgres.js counts failures across the whole pool and waits up to 20 s by
 * default (`(0.5..1) × min(3^n / 100, 20)`): after a 2 s Postgres restart under load its
 * connections were still waiting, and the service unready, 8–9 s after the server was back.
 * A refused connection to a database costs next to nothing; being away from it costs orders.
 */
function reconnectBackoff(failures: number): number {
  return (0.5 + Math.random() / 2) * Math.min(0.05 * 2 ** failures, 0.5);
}

function openPostgres<TSchema extends Record<string, unknown>>(
  url: string,
  options: DatabaseOptions<TSchema>,
): Database<TSchema> {
  const clientOptions = { onnotice: () => {}, connect_timeout: 5, backoff: reconnectBackoff };
  const client = connectPostgres(url, { ...clientOptions, max: options.poolSize ?? 10 });
  const db = drizzlePostgres(preparingStatements(client), { schema: options.schema });
  return {
    kind: "postgres",
    db: db as unknown as AppDatabase<TSchema>,
    async migrate() {
      // drizzle's migrate() takes no lock; replicas migrating an empty database together
      // would collide. One connection holds a session-level advisory lock while it migrates.
      const lockClient = connectPostgres(url, { ...clientOptions, max: 1 });
      try {
        await lockClient`select pg_advisory_lock(${migrationLockKey})`;
        await migratePostgres(drizzlePostgres(lockClient), {
          migrationsFolder: options.migrationsFolder,
        });
        await lockClient`select pg_advisory_unlock(${migrationLockKey})`;
      } finally {
        await lockClient.end({ timeout: 5 });
      }
    },
    async ping() {
      await client`select 1`;
    },
    async close() {
      await client.end({ timeout: 5 });
    },
  };
}

/**
 * A postgres-js client for a postgres:// URL. Like libpq, `?host=/a/directory` connects through
 * the Unix-domain socket in that directory (cheaper than TCP on the same machine), for example
 * postgres://postgres@localhost/shop?host=/var/run/postgresql.
 */
export function connectPostgres(
  url: string,
  // biome-ignore lint/complexity/noBannedTypes: postgres-js's own default type parameter
  options: postgres.Options<{}> = {},
): postgres.Sql {
  const parsed = new URL(url);
  const socketDirectory = parsed.searchParams.get("host");
  if (!socketDirectory?.startsWith("/")) return postgres(url, options);
  parsed.searchParams.delete("host");
  return postgres(parsed.toString(), { ...options, host: socketDirectory });
}

/**
 * The postgres-js client as drizzle should see it, tuned for the round trip, which is what a
 * query costs most here:
 * - drizzle runs every query through unsafe(), which does not prepare: each parameterized
 *   query then costs two round trips (describe, then execute) and a parse and plan in
 *   Postgres. The services' queries are a small fixed set of texts, so they are all prepared:
 *   each connection parses a text once and afterwards only binds and executes.
 * - postgres-js's begin() waits for BEGIN's answer before running the transaction's first
 *   statement; here BEGIN leaves together with that statement (see transaction()).
 */
function preparingStatements(client: postgres.Sql): postgres.Sql {
  return new Proxy(client, {
    get(target, property, receiver) {
      switch (property) {
        case "unsafe":
          return prepared(target);
        case "begin":
          return (...args: unknown[]) => {
            const fn = args.pop() as (sql: postgres.Sql) => unknown;
            return transaction(target, (args[0] as string | undefined) ?? "", fn);
          };
        default:
          return Reflect.get(target, property, receiver);
      }
    },
  });
}

const prepared =
  (client: postgres.Sql) =>
  (query: string, params?: unknown[], options?: postgres.UnsafeQueryOptions) =>
    // biome-ignore lint/suspicious/noExplicitAny: postgres-js's parameter typing is narrower than what drizzle passes
    client.unsafe(query, params as any, { ...options, prepare: true });

/** Statements a transaction sends together with its COMMIT (see sendWithCommit). */
interface OpenTransaction {
  nested: boolean;
  withCommit: { sql: string; params: unknown[] }[];
}
const openTransaction = new AsyncLocalStorage<OpenTransaction>();
const dialect = new PgDialect();

/**
 * Has a statement sent in the same round trip as the COMMIT of the Postgres transaction the
 * caller is running in, instead of waiting for its answer first: for a transaction's last
 * write, one round trip fewer. If it fails, the transaction rolls back and throws its error.
 * Returns false where this cannot be done (PGlite, a savepoint, outside a transaction): the
 * caller then runs the statement itself.
 */
export function sendWithCommit(statement: SQL): boolean {
  const open = openTransaction.getStore();
  if (!open || open.nested) return false;
  const { sql: text, params } = dialect.sqlToQuery(statement);
  open.withCommit.push({ sql: text, params });
  return true;
}

/**
 * A write whose answer nobody reads, sent with the COMMIT where sendWithCommit can, else run
 * now. Not async: where it runs now, the query is sent when the result is awaited, like any
 * drizzle query, so it keeps its place among queries awaited together.
 */
export function writeAtCommit(
  executor: { execute(statement: SQL): PromiseLike<unknown> },
  statement: SQL,
): PromiseLike<unknown> {
  return sendWithCommit(statement) ? Promise.resolve() : executor.execute(statement);
}

/**
 * begin() for drizzle on one reserved connection. BEGIN is sent without waiting for its answer,
 * so it shares a round trip with the first statement (which fails too if BEGIN did); COMMIT
 * or ROLLBACK ends it, and nested transactions become savepoints.
 */
async function transaction(
  pool: postgres.Sql,
  mode: string,
  fn: (sql: postgres.Sql) => unknown,
): Promise<unknown> {
  if (!/^[a-z ]*$/i.test(mode)) throw new Error(`not a transaction mode: "${mode}"`);
  const connection = await pool.reserve();
  let savepoints = 0;
  const inTransaction = new Proxy(connection, {
    get(target, property, receiver) {
      switch (property) {
        case "unsafe":
          return prepared(target);
        case "begin":
          throw new Error("a transaction is open on this connection; nest with savepoints");
        case "savepoint":
          return async (inner: (sql: postgres.Sql) => unknown) => {
            const name = `s${savepoints++}`;
            await target.unsafe(`savepoint ${name}`);
            try {
              const result = await openTransaction.run({ nested: true, withCommit: [] }, () =>
                inner(inTransaction),
              );
              await target.unsafe(`release savepoint ${name}`);
              return result;
            } catch (error) {
              await target.unsafe(`rollback to savepoint ${name}`);
              throw error;
            }
          };
        default:
          return Reflect.get(target, property, receiver);
      }
    },
  });
  try {
    const begun = connection.unsafe(`begin ${mode}`).execute();
    // Awaited after the work below; until then its failure must not go unhandled.
    begun.catch(() => {});
    try {
      const open: OpenTransaction = { nested: false, withCommit: [] };
      const result = await openTransaction.run(open, () => fn(inTransaction));
      await begun;
      // Enqueued on the connection in this order, sent together. After a failed statement
      // Postgres answers COMMIT with ROLLBACK: the statement's error is what to throw.
      const last = open.withCommit.map(({ sql: text, params }) =>
        // biome-ignore lint/suspicious/noExplicitAny: drizzle's params, as in prepared()
        connection.unsafe(text, params as any, { prepare: true }).execute(),
      );
      const committed = connection.unsafe("commit").execute();
      try {
        await Promise.all(last);
      } catch (error) {
        await committed.catch(() => {});
        throw error;
      }
      await committed;
      return result;
    } catch (error) {
      await connection.unsafe("rollback").catch(() => {});
      throw error;
    }
  } finally {
    connection.release();
  }
}

/**
 * PGlite's defaults are a server's (shared_buffers 128MB): a service's embedded database is
 * small, and 16MB of buffers cut its process's idle RSS from ~290 to ~170 MB. Passed on the
 * command line: PGlite's postgresqlconf option would replace initdb's postgresql.conf whole.
 */
const embeddedSettings = ["shared_buffers=16MB"];

async function createPglite(dataDir: string | undefined) {
  const { PGlite } = await import("@electric-sql/pglite");
  return PGlite.create(dataDir, {
    startParams: [...PGlite.defaultStartParams, ...embeddedSettings.flatMap((s) => ["-c", s])],
  });
}

/**
 * Creates an empty PGlite data directory (initdb, the slow part of a first start: seconds of
 * CPU and ~800 MB). A copy of it opens like any data directory, so mesh/local runs this
 * once, in a process of its own, and copies the result for each service.
 */
export async function initPgliteDataDir(dataDir: string): Promise<void> {
  const client = await createPglite(dataDir);
  await client.close();
}

async function openPglite<TSchema extends Record<string, unknown>>(
  options: DatabaseOptions<TSchema>,
): Promise<Database<TSchema>> {
  // Loaded only when used: a service on Postgres should not carry the embedded database.
  const [client, { drizzle: drizzlePglite }, { migrate: migratePglite }] = await Promise.all([
    createPglite(options.dataDir),
    import("drizzle-orm/pglite"),
    import("drizzle-orm/pglite/migrator"),
  ]);
  const db = drizzlePglite({ client, schema: options.schema });
  return {
    kind: "pglite",
    db: db as unknown as AppDatabase<TSchema>,
    // PGlite is opened by this process alone, so nothing else can migrate concurrently.
    migrate: () => migratePglite(db, { migrationsFolder: options.migrationsFolder }),
    async ping() {
      await db.execute(sql`select 1`);
    },
    async close() {
      if (!client.closed) await client.close();
    },
  };
}

/** The SQLSTATE of a database error, looking through drizzle's wrapper. */
export function sqlState(error: unknown): string | undefined {
  for (let e = error; e instanceof Error || (e && typeof e === "object"); ) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && /^[0-9A-Z]{5}$/.test(code)) return code;
    e = (e as { cause?: unknown }).cause;
    if (!e) break;
  }
  return undefined;
}

/** True when error is a unique violation, optionally of one named constraint. */
export function isUniqueViolation(error: unknown, constraint?: string): boolean {
  if (sqlState(error) !== "23505") return false;
  if (!constraint) return true;
  for (let e = error; e && typeof e === "object"; e = (e as { cause?: unknown }).cause) {
    const name =
      (e as { constraint_name?: unknown }).constraint_name ??
      (e as { constraint?: unknown }).constraint;
    if (typeof name === "string") return name === constraint;
  }
  return false;
}

/** Rows of a raw query on either driver (postgres-js returns an array, PGlite { rows }). */
export function rowsOf<T>(result: unknown): T[] {
  return (Array.isArray(result) ? result : (result as { rows: T[] }).rows) as T[];
}

/**
 * The rows of a raw `sql` query that answers a table's columns (`select *`, `returning *`),
 * typed and converted as drizzle's own select gives them. The hot paths are raw `sql`:
 * drizzle's query builders take 30–90 µs to build a query, about ten times a template.
 */
export function tableRows<T extends Table>(table: T, result: unknown): T["$inferSelect"][] {
  const columns = Object.entries(getTableColumns(table));
  return rowsOf<Record<string, unknown>>(result).map((raw) => {
    const row: Record<string, unknown> = {};
    for (const [key, column] of columns) {
      const value = raw[column.name];
      row[key] = value === null || value === undefined ? null : column.mapFromDriverValue(value);
    }
    return row as T["$inferSelect"];
  });
}

/**
 * A Postgres array literal for values that need no quoting (uuids, numbers), to pass as one
 * parameter on either driver: `id = any(${arrayLiteral(ids)}::uuid[])`.
 */
export function arrayLiteral(values: readonly (string | number)[]): string {
  return `{${values.join(",")}}`;
}
