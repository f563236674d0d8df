import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { sql } from "drizzle-orm";
import { afterAll, describe, expect, it } from "vitest";
import {
  connectPostgres,
  isUniqueViolation,
  openDatabase,
  rowsOf,
  sendWithCommit,
  startService,
} from "../src/index.js";
import {
  createTestDatabase,
  switchablePostgresProxy,
  testEnv,
  testPostgresUrl,
} from "../src/testing/index.js";
import { deliveries, sinkService } from "./fixtures/sink-service.js";

const migrationsFolder = fileURLToPath(new URL("./fixtures/migrations", import.meta.url));
const realPostgres = await testPostgresUrl();
const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

/** A fresh test database with the fixture's migrations applied; dropped after the file. */
async function migratedDatabase(name: string) {
  const testDb = await createTestDatabase(name);
  cleanups.push(testDb.drop);
  const database = await openDatabase({
    url: testDb.url,
    schema: { deliveries },
    migrationsFolder,
  });
  cleanups.push(database.close);
  await database.migrate();
  return database;
}

/** The event ids in the fixture's deliveries table, in order. */
async function eventIds(db: Awaited<ReturnType<typeof migratedDatabase>>["db"]) {
  return (await db.select().from(deliveries).orderBy(deliveries.eventId)).map((r) => r.eventId);
}

describe("database", () => {
  it("recognises unique violations through drizzle's error wrapper", async () => {
    const database = await migratedDatabase("platform_unique");
    await database.db.insert(deliveries).values({ eventId: "e1", type: "t" });
    const error = await database.db
      .insert(deliveries)
      .values({ eventId: "e1", type: "t" })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(isUniqueViolation(error)).toBe(true);
    expect(isUniqueViolation(error, "deliveries_pkey")).toBe(true);
    expect(isUniqueViolation(error, "other_constraint")).toBe(false);
    expect(isUniqueViolation(new Error("boom"))).toBe(false);
  });

  it.skipIf(!realPostgres)("lets several replicas migrate an empty database at once", async () => {
    const testDb = await createTestDatabase("platform_migrate");
    cleanups.push(testDb.drop);
    const replicas = await Promise.all(
      Array.from({ length: 4 }, () =>
        openDatabase({ url: testDb.url, schema: { deliveries }, migrationsFolder }),
      ),
    );
    for (const replica of replicas) cleanups.push(replica.close);
    await Promise.all(replicas.map((replica) => replica.migrate()));
    const applied = await replicas[0]!.db.execute(
      sql`select count(*)::int as n from drizzle.__drizzle_migrations`,
    );
    // Each of the folder's migrations once.
    const journal = JSON.parse(readFileSync(`${migrationsFolder}/meta/_journal.json`, "utf8"));
    expect((applied as unknown as { n: number }[])[0]?.n).toBe(journal.entries.length);
  });

  it("commits a transaction, rolls back a failed one, and nests as savepoints", async () => {
    const database = await migratedDatabase("platform_transactions");
    const { db } = database;
    const ids = () => eventIds(db);

    await db.transaction(async (tx) => {
      await tx.insert(deliveries).values({ eventId: "kept", type: "t" });
    });
    await expect(
      db.transaction(async (tx) => {
        await tx.insert(deliveries).values({ eventId: "undone", type: "t" });
        throw new Error("business rule failed");
      }),
    ).rejects.toThrow("business rule failed");
    // A failing statement fails the transaction, and nothing of it stays.
    await expect(
      db.transaction(async (tx) => {
        await tx.insert(deliveries).values({ eventId: "before-the-failure", type: "t" });
        await tx.insert(deliveries).values({ eventId: "kept", type: "t" });
      }),
    ).rejects.toThrow();
    await db.transaction(async (tx) => {
      await tx.insert(deliveries).values({ eventId: "outer", type: "t" });
      await expect(
        tx.transaction(async (inner) => {
          await inner.insert(deliveries).values({ eventId: "inner", type: "t" });
          throw new Error("inner failed");
        }),
      ).rejects.toThrow("inner failed");
      await tx.transaction(async (inner) => {
        await inner.insert(deliveries).values({ eventId: "inner-kept", type: "t" });
      });
    });
    expect(await ids()).toEqual(["inner-kept", "kept", "outer"]);
  });

  it.skipIf(!realPostgres)(
    "sends a statement with the COMMIT, and rolls back with its error if it fails",
    async () => {
      const database = await migratedDatabase("platform_with_commit");
      const { db } = database;
      const ids = () => eventIds(db);
      const insert = (eventId: string) =>
        sql`insert into ${deliveries} (event_id, type) values (${eventId}, 't')`;

      expect(sendWithCommit(insert("outside"))).toBe(false);
      await db.transaction(async (tx) => {
        await tx.insert(deliveries).values({ eventId: "first", type: "t" });
        expect(sendWithCommit(insert("with-commit"))).toBe(true);
        // Not sent yet: the transaction's own statements do not see it.
        expect(
          rowsOf(await tx.execute(sql`select 1 from ${deliveries} where event_id = 'with-commit'`)),
        ).toEqual([]);
        // Inside a savepoint it cannot be: the savepoint might roll back alone.
        await tx.transaction(async () => {
          expect(sendWithCommit(insert("in-savepoint"))).toBe(false);
        });
      });
      expect(await ids()).toEqual(["first", "with-commit"]);

      // A duplicate key at COMMIT: the transaction's error, and none of its writes stay.
      const failed = await db
        .transaction(async (tx) => {
          await tx.insert(deliveries).values({ eventId: "undone", type: "t" });
          sendWithCommit(insert("first"));
        })
        .then(
          () => undefined,
          (error: unknown) => error,
        );
      expect(isUniqueViolation(failed, "deliveries_pkey")).toBe(true);
      expect(await ids()).toEqual(["first", "with-commit"]);
      // The connection is usable again afterwards.
      await db.transaction(async (tx) => {
        sendWithCommit(insert("after"));
        await tx.execute(sql`select 1`);
      });
      expect(await ids()).toEqual(["after", "first", "with-commit"]);
    },
  );

  it.skipIf(!realPostgres)("runs each transaction on a connection of its own", async () => {
    const database = await migratedDatabase("platform_isolation");
    const { db } = database;
    const ids = () => eventIds(db);
    // One's uncommitted row is not the other's.
    let release!: () => void;
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    const open = db.transaction(async (tx) => {
      await tx.insert(deliveries).values({ eventId: "uncommitted", type: "t" });
      await held;
    });
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(await db.transaction(async () => ids())).not.toContain("uncommitted");
    release();
    await open;
    expect(await ids()).toContain("uncommitted");
  });

  // Debian's Postgres puts its socket here; elsewhere there may be none to connect through.
  const socketDirectory = "/var/run/postgresql";
  it.skipIf(!realPostgres || !existsSync(`${socketDirectory}/.s.PGSQL.5432`))(
    "connects through the Unix socket a URL's ?host=/directory names, as libpq does",
    async () => {
      const testDb = await createTestDatabase("platform_socket");
      cleanups.push(testDb.drop);
      const url = new URL(testDb.url!);
      url.hostname = "no-such-host.invalid";
      url.searchParams.set("host", socketDirectory);
      const sql = connectPostgres(url.toString(), { max: 1 });
      cleanups.push(() => sql.end());
      const [row] = await sql`select current_database() as name, inet_server_addr() as address`;
      // No TCP address on the server's side: the connection is a Unix-domain one.
      expect(row).toEqual({ name: new URL(testDb.url!).pathname.slice(1), address: null });
      const elsewhere = new URL(url);
      elsewhere.searchParams.set("host", "/nonexistent");
      await expect(connectPostgres(elsewhere.toString(), { max: 1 })`select 1`).rejects.toThrow(
        /ENOENT/,
      );
    },
  );
});

describe.skipIf(!realPostgres)("startup while the database is down", () => {
  it("reports not ready, refuses RPCs with unavailable, and becomes ready when it comes up", async () => {
    const testDb = await createTestDatabase("platform_down");
    cleanups.push(testDb.drop);
    const url = new URL(testDb.url!);
    const proxy = await switchablePostgresProxy(url);
    cleanups.push(proxy.stop);
    const proxied = new URL(url);
    proxied.port = String(proxy.port);
    const service = await startService(
      sinkService,
      testEnv(testDb, { DATABASE_URL: proxied.toString() }),
    );
    cleanups.push(service.stop);

    const readyz = await fetch(`${service.url}/readyz`);
    expect(readyz.status).toBe(503);
    expect(((await readyz.json()) as { reason: string }).reason).toMatch(/database/);
    expect((await fetch(`${service.url}/healthz`)).status).toBe(200);
    const rpc = await fetch(`${service.url}/shop.events.v1.EventSinkService/Deliver`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{}",
    });
    expect(rpc.status).toBe(503);
    expect(((await rpc.json()) as { code: string }).code).toBe("unavailable");

    await proxy.start();
    await service.ready;
    expect((await fetch(`${service.url}/readyz`)).status).toBe(200);
  });
});
