// `npm run demo` in a second terminal before the shop is ready waits for it, then succeeds;
// with no shop at all it ends with one line saying so, never a stack trace.

import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { testPostgresUrl } from "@thinmesh/platform/testing";
import { afterAll, describe, expect, it } from "vitest";
import { dropShopDatabases } from "../../mesh/local/src/shop.js";
import { freePort, isAlive, type Spawned, spawnNode, startedPids } from "./processes.js";

const serverUrl = await testPostgresUrl();
const prefix = `thinmesh_demo_${randomBytes(3).toString("hex")}`;
const dataDir = mkdtempSync(join(tmpdir(), "thinmesh-demo-"));
let shop: Spawned | undefined;

afterAll(async () => {
  if (shop && shop.child.exitCode === null) {
    shop.child.kill("SIGINT");
    await shop.exited;
  }
  for (const pid of startedPids(shop?.output() ?? "").filter(isAlive)) process.kill(pid, "SIGKILL");
  rmSync(dataDir, { recursive: true, force: true });
  if (serverUrl) await dropShopDatabases(serverUrl, prefix);
});

describe("npm run demo", () => {
  it("with no shop, ends after THINMESH_DEMO_WAIT_S with one line saying what to do", async () => {
    // A port of the test's own choosing for a shop that is not there (odd, from bind(0): the
    // kernel's outgoing connections take even ports).
    const url = `http://127.0.0.1:${await freePort()}`;
    const demo = spawnNode(["scripts/demo.js"], { THINMESH_URL: url, THINMESH_DEMO_WAIT_S: "2" });
    expect(await demo.exited).toBe(1);
    const output = demo.output();
    expect(output).toContain(`waiting for the shop at ${url}`);
    expect(output).toContain(
      `demo: the shop at ${url} is not ready after 2 s (cannot reach it: ECONNREFUSED): start it with npm start`,
    );
    expect(output).not.toMatch(/^\s+at /m);
  });

  it("started before the shop, waits for it and runs to CONFIRMED", async () => {
    // The demo must know the port before the shop starts: one the test picks (see above).
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const demo = spawnNode(["scripts/demo.js"], { THINMESH_URL: url, THINMESH_DEMO_WAIT_S: "120" });
    await demo.waitFor(/waiting for the shop/, 10_000);
    shop = spawnNode(["mesh/local/dist/main.js", "--json"], {
      THINMESH_INGRESS_PORT: String(port),
      THINMESH_ACCESS_LOG: "off",
      THINMESH_DATA_DIR: dataDir,
      THINMESH_DB_PREFIX: prefix,
      LOG_LEVEL: "warn",
      ...(serverUrl ? { DATABASE_URL: serverUrl } : {}),
    });
    const code = await demo.exited;
    const output = demo.output();
    expect(code, output).toBe(0);
    expect(output).toMatch(/: CONFIRMED, total /);
    expect(output).toMatch(/: CANCELLED, total /);
    expect(output).not.toMatch(/SyntaxError|^\s+at /m);
  }, 150_000);
});
