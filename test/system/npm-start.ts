import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { dropShopDatabases } from "../../mesh/local/src/shop.js";
import { isAlive, type Spawned, spawnNode, startedPids } from "./processes.js";

/**
 * `npm start` as a test runs it (the built mesh/local/dist/main.js, JSON output): every port
 * from the operating system, so that test files can run side by side; its own data directory;
 * on the real Postgres when there is one, with databases of its own. stop() ends every shop
 * it started (SIGINT, then SIGKILL for any workload left) and removes what they created.
 */
export function npmStart(name: string, serverUrl: string | undefined) {
  const prefix = `thinmesh_${name}_${randomBytes(3).toString("hex")}`;
  const dataDir = mkdtempSync(join(tmpdir(), `thinmesh-${name}-`));
  const spawned: Spawned[] = [];
  return {
    dataDir,
    start(env: Record<string, string> = {}): Spawned {
      const shop = spawnNode(["mesh/local/dist/main.js", "--json"], {
        THINMESH_INGRESS_PORT: "0",
        THINMESH_ADMIN_PORT: "0",
        THINMESH_ACCESS_LOG: "off",
        THINMESH_DATA_DIR: dataDir,
        THINMESH_DB_PREFIX: prefix,
        LOG_LEVEL: "warn",
        ...(serverUrl ? { DATABASE_URL: serverUrl } : {}),
        ...env,
      });
      spawned.push(shop);
      return shop;
    },
    async stop() {
      // A failed assertion must not leave a shop or its services running.
      for (const shop of spawned) {
        if (shop.child.exitCode === null && shop.child.signalCode === null) {
          shop.child.kill("SIGINT");
          await shop.exited;
        }
        for (const pid of startedPids(shop.output()).filter(isAlive)) process.kill(pid, "SIGKILL");
      }
      rmSync(dataDir, { recursive: true, force: true });
      if (serverUrl) await dropShopDatabases(serverUrl, prefix);
    },
  };
}
