// A service's pool after its Postgres restarts under load (a private cluster of this test's
// own): its connections come back within a fraction of a second of the server, not after
// postgres.js's default reconnect backoff (shared by the pool, up to 20 s), which kept the
// services unready for 8–9 s after a 2 s restart.
import { openDatabase } from "@thinmesh/platform";
import { sql } from "drizzle-orm";
import { afterAll, describe, expect, it } from "vitest";
import {
  type PrivatePostgres,
  privatePostgresUnavailable,
  startPrivatePostgres,
} from "./private-postgres.js";

const unavailable = privatePostgresUnavailable();
let postgres: PrivatePostgres | undefined;
afterAll(() => postgres?.destroy());

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe.skipIf(unavailable)("a database pool across a Postgres restart", () => {
  it("answers again within 1 s of the server accepting connections", async () => {
    postgres = startPrivatePostgres();
    const database = await openDatabase({
      url: postgres.url,
      schema: {},
      migrationsFolder: "unused",
    });
    try {
      // Traffic as a service has it: every query in flight or arriving while the server is
      // away fails a connection of the pool.
      let running = true;
      const load = Array.from({ length: 6 }, async () => {
        while (running) {
          await database.db.execute(sql`select pg_sleep(0.02)`).catch(() => {});
          await sleep(10);
        }
      });
      await sleep(500);
      postgres.stop();
      await sleep(2_000);
      postgres.start(); // returns once the server accepts connections
      const back = performance.now();
      let answered = false;
      while (!answered && performance.now() - back < 15_000) {
        answered = await database.ping().then(
          () => true,
          () => false,
        );
        if (!answered) await sleep(50);
      }
      running = false;
      await Promise.all(load);
      expect(answered).toBe(true);
      expect(performance.now() - back).toBeLessThan(1_000);
    } finally {
      await database.close();
    }
  }, 60_000);
});
