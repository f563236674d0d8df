// A lost database connection never ends the process (postgres.js 3.4.9 threw an uncaught
// TypeError from nextWrite, porsager/postgres #1154/#1208): requests meanwhile get
// unavailable, readiness goes false while the server is gone, and recovery is automatic.
import { fileURLToPath } from "node:url";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { MoneySchema } from "@thinmesh/contracts/shop/common/v1/money_pb.js";
import {
  DeliverRequestSchema,
  EventSinkService,
} from "@thinmesh/contracts/shop/events/v1/events_pb.js";
import { sql } from "drizzle-orm";
import { afterAll, describe, expect, it } from "vitest";
import { connectPostgres, openDatabase, startService, transientCause } from "../src/index.js";
import {
  buildEventEnvelope,
  createTestDatabase,
  switchablePostgresProxy,
  testEnv,
  testPostgresUrl,
} from "../src/testing/index.js";
import { deliveries, sinkService } from "./fixtures/sink-service.js";

const realPostgres = await testPostgresUrl();
const migrationsFolder = fileURLToPath(new URL("./fixtures/migrations", import.meta.url));
const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Terminates every backend of a database from an admin connection, `times` times. */
async function killBackendsRepeatedly(databaseName: string, times: number, everyMs: number) {
  const admin = connectPostgres(realPostgres!, { max: 1, onnotice: () => {} });
  try {
    for (let i = 0; i < times; i++) {
      await sleep(everyMs);
      await admin`select pg_terminate_backend(pid) from pg_stat_activity
        where datname = ${databaseName} and pid <> pg_backend_pid()`;
    }
  } finally {
    await admin.end();
  }
}

/** Resolves once `work` succeeds, trying for up to 10 s (a dying connection may fail it). */
async function eventually(work: () => Promise<unknown>) {
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      return await work();
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await sleep(100);
    }
  }
}

/** Runs `work` in `workers` loops until stopped; collects the errors. */
function loadLoop(workers: number, work: (n: number) => Promise<unknown>) {
  let stopped = false;
  let done = 0;
  const errors: unknown[] = [];
  const loops = Array.from({ length: workers }, async () => {
    while (!stopped) {
      try {
        await work(done);
        done++;
      } catch (error) {
        errors.push(error);
        await sleep(5);
      }
    }
  });
  return {
    errors,
    done: () => done,
    async stop() {
      stopped = true;
      await Promise.all(loops);
    },
  };
}

describe.skipIf(!realPostgres)("a lost database connection", () => {
  it("fails the transactions it hit with transient errors, and the pool recovers", async () => {
    const testDb = await createTestDatabase("platform_lost_tx");
    cleanups.push(testDb.drop);
    const database = await openDatabase({
      url: testDb.url,
      schema: { deliveries },
      migrationsFolder,
    });
    cleanups.push(database.close);
    await database.migrate();

    const load = loadLoop(8, (n) =>
      database.db.transaction(async (tx) => {
        await tx.insert(deliveries).values({ eventId: `tx-${n}-${Math.random()}`, type: "t" });
        await tx.execute(sql`select 1`);
      }),
    );
    await killBackendsRepeatedly(new URL(testDb.url!).pathname.slice(1), 20, 100);
    const doneBeforeHeal = load.done();
    await sleep(500);
    // Every loop comes back (none hangs on a dead reserved connection)...
    await load.stop();
    expect(load.errors.length).toBeGreaterThan(0);
    // ...every failure says it is transient (answered unavailable)...
    expect(load.errors.filter((e) => !transientCause(e))).toEqual([]);
    // ...and work goes on after the kills.
    expect(load.done()).toBeGreaterThan(doneBeforeHeal);
    await database.db.transaction((tx) => tx.execute(sql`select 1`));
  }, 60_000);

  it("keeps a service up: unavailable while broken, not ready while gone, then recovers", async () => {
    const testDb = await createTestDatabase("platform_lost_service");
    cleanups.push(testDb.drop);
    const proxy = await switchablePostgresProxy(new URL(testDb.url!));
    cleanups.push(proxy.stop);
    await proxy.start();
    const service = await startService(sinkService, testEnv(testDb, { DATABASE_URL: proxy.url() }));
    cleanups.push(service.stop);
    await service.ready;
    const client = createClient(
      EventSinkService,
      createConnectTransport({ baseUrl: service.url, httpVersion: "1.1" }),
    );
    const deliver = () =>
      client.deliver(
        create(DeliverRequestSchema, {
          events: [
            buildEventEnvelope(
              MoneySchema,
              { currencyCode: "EUR", amountMinor: 1n },
              { source: "test", type: "test.ping" },
            ),
          ],
        }),
      );

    const load = loadLoop(6, deliver);
    await killBackendsRepeatedly(new URL(testDb.url!).pathname.slice(1), 15, 100);
    await load.stop();
    const codes = load.errors.map((e) => Code[ConnectError.from(e).code]);
    expect(codes.filter((code) => code !== "Unavailable")).toEqual([]);
    await eventually(deliver); // recovered

    await proxy.stop(); // the server goes away
    const error = await deliver().then(
      () => undefined,
      (e: unknown) => ConnectError.from(e),
    );
    expect(error?.code).toBe(Code.Unavailable);
    const readyz = await fetch(`${service.url}/readyz`);
    expect(readyz.status).toBe(503);

    // Requests go on while it is away: every one fails a connection of the pool, and
    // postgres.js's default backoff (shared by the pool, up to 20 s) would keep the service
    // waiting long after the server is back.
    const whileAway = loadLoop(6, deliver);
    await sleep(1_500);
    await whileAway.stop();
    expect(whileAway.done()).toBe(0);

    await proxy.start(); // and comes back
    const back = Date.now();
    let ready = false;
    while (!ready && Date.now() - back < 20_000) {
      ready = (await fetch(`${service.url}/readyz`)).status === 200;
      if (!ready) await sleep(50);
    }
    expect(ready).toBe(true);
    // Ready again within the reconnect backoff's cap (0.5 s) and a probe, not seconds later.
    expect(Date.now() - back).toBeLessThan(2_000);
    await eventually(deliver);
  }, 60_000);
});
