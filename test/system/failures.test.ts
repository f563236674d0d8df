// A start that cannot succeed says why and exits non-zero within its bound, leaving no
// process behind; and no service outlives `npm start` however it ends.
import { writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { testPostgresUrl } from "@thinmesh/platform/testing";
import { afterAll, describe, expect, it } from "vitest";
import { npmStart } from "./npm-start.js";
import { allGone, isAlive, listeningUrls, spawnNode, startedPids } from "./processes.js";

const serverUrl = await testPostgresUrl();
const shops = npmStart("fail", serverUrl);
const start = shops.start;
const { dataDir } = shops;
afterAll(() => shops.stop());

describe("a start that cannot succeed", () => {
  it("exits non-zero at once when the ingress port is taken, naming the port", async () => {
    const squatter: Server = createServer();
    await new Promise<void>((resolve) => squatter.listen(0, "127.0.0.1", resolve));
    const port = (squatter.address() as { port: number }).port;
    try {
      const began = Date.now();
      const shop = start({ THINMESH_INGRESS_PORT: String(port) });
      const code = await shop.exited;
      expect(code).not.toBe(0);
      expect(code).not.toBeNull();
      expect(Date.now() - began).toBeLessThan(15_000);
      expect(shop.output()).toContain(
        `thinmesh did not start: the ingress port 127.0.0.1:${port} (THINMESH_INGRESS_PORT) is in use by another program`,
      );
      expect(shop.output()).not.toMatch(/^\s+at /m); // no stack trace for an expected condition
      // Every port is bound before any service starts: nothing was started.
      expect(startedPids(shop.output())).toEqual([]);
    } finally {
      squatter.close();
    }
  });

  it("exits non-zero when a service cannot start, naming it and its last error line, and leaves no process", async () => {
    const shop = start({ PAYMENT_DECLINE_ABOVE_MINOR: "not-a-number" });
    const code = await shop.exited;
    const output = shop.output();
    expect(code, output).toBe(1);
    expect(output).toMatch(
      /thinmesh did not start: payment(-v2)?-0 cannot start: its configuration is invalid: .*PAYMENT_DECLINE_ABOVE_MINOR/,
    );
    const pids = startedPids(output);
    expect(pids).toHaveLength(listeningUrls(output).instances.length);
    expect(pids.filter(isAlive)).toEqual([]);
  });

  it("gives up on services that never get ready within THINMESH_READY_TIMEOUT_S, naming one and its last error", async () => {
    // Each service accepts connections on its port but never answers: a readiness request
    // without a timeout would wait forever.
    const stall = join(dataDir, "stall.mjs");
    writeFileSync(
      stall,
      [
        'import net from "node:net";',
        "net.createServer(() => {}).listen({ fd: Number(process.env.LISTEN_FD) });",
        'console.error("TypeError: the service is stalled on purpose");',
        "await new Promise(() => setInterval(() => {}, 1000));",
      ].join("\n"),
    );
    const began = Date.now();
    const shop = start({
      THINMESH_READY_TIMEOUT_S: "5",
      THINMESH_NODE_ARGS: `--import=${pathToFileURL(stall).href}`,
    });
    const code = await shop.exited;
    const output = shop.output();
    expect(code, output).toBe(1);
    expect(Date.now() - began).toBeLessThan(40_000);
    expect(output).toMatch(
      /thinmesh did not start: [\w-]+ did not become ready within 5 s \(\/readyz: no answer within 2000 ms\); its last error: TypeError: the service is stalled on purpose/,
    );
    const pids = startedPids(output);
    expect(pids).toHaveLength(listeningUrls(output).instances.length);
    expect(pids.filter(isAlive)).toEqual([]);
  });
});

describe("npm start -- --help", () => {
  it("lists every setting, and an unknown argument is refused with it", async () => {
    const help = spawnNode(["mesh/local/dist/main.js", "--help"], {});
    expect(await help.exited).toBe(0);
    for (const variable of [
      "THINMESH_INGRESS_PORT",
      "THINMESH_READY_TIMEOUT_S",
      "DATABASE_URL",
      "THINMESH_DB_PREFIX",
      "THINMESH_DATA_DIR",
      "THINMESH_ACCESS_LOG",
      "THINMESH_NODE_ARGS",
      "LOG_LEVEL",
      "THINMESH_URL",
    ]) {
      expect(help.output()).toContain(variable);
    }
    const wrong = spawnNode(["mesh/local/dist/main.js", "--jsno"], {});
    expect(await wrong.exited).toBe(2);
    expect(wrong.output()).toContain("unknown argument --jsno");
  });
});

describe("when npm start dies", () => {
  it("no service outlives it, even after SIGKILL", async () => {
    const shop = start({});
    await shop.waitFor(/thinmesh is ready/, 90_000);
    const pids = startedPids(shop.output());
    expect(pids).toHaveLength(listeningUrls(shop.output()).instances.length);
    expect(pids.every(isAlive)).toBe(true);
    shop.child.kill("SIGKILL");
    await shop.exited;
    const gone = await allGone(pids, 10_000);
    for (const pid of pids.filter(isAlive)) process.kill(pid, "SIGKILL"); // no orphans if it fails
    expect(gone).toBe(true);
  }, 120_000);
});
