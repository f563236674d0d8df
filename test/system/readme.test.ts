// The README's example block, run as it is with bash, curl and jq against a started shop,
// ends in a CONFIRMED order.
import { execFileSync, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connectPostgres } from "@thinmesh/platform";
import { testPostgresUrl } from "@thinmesh/platform/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  isAlive,
  listeningUrls,
  repoRoot,
  type Spawned,
  spawnNode,
  startedPids,
} from "./processes.js";

const serverUrl = await testPostgresUrl();
const prefix = `thinmesh_readme_${randomBytes(3).toString("hex")}`;
const dataDir = mkdtempSync(join(tmpdir(), "thinmesh-readme-"));
let shop: Spawned;
let ingress: string;

/** The shell block that follows the `<!-- readme-example -->` marker in README.md. */
function readmeExample(markdown: string): string {
  const marker = markdown.indexOf("<!-- readme-example -->");
  if (marker < 0) throw new Error("README.md has no <!-- readme-example --> marker");
  const block = markdown.slice(marker).match(/```sh\n([\s\S]*?)\n```/);
  if (!block?.[1]) throw new Error("no ```sh block after the <!-- readme-example --> marker");
  return block[1];
}

beforeAll(async () => {
  shop = spawnNode(["mesh/local/dist/main.js", "--json"], {
    THINMESH_INGRESS_PORT: "0",
    THINMESH_ACCESS_LOG: "off",
    THINMESH_DATA_DIR: dataDir,
    THINMESH_DB_PREFIX: prefix,
    LOG_LEVEL: "warn",
    ...(serverUrl ? { DATABASE_URL: serverUrl } : {}),
  });
  await shop.waitFor(/thinmesh is ready/, 90_000);
  ingress = listeningUrls(shop.output()).ingress;
}, 120_000);

afterAll(async () => {
  if (shop && shop.child.exitCode === null) {
    shop.child.kill("SIGINT");
    await shop.exited;
  }
  for (const pid of startedPids(shop?.output() ?? "").filter(isAlive)) process.kill(pid, "SIGKILL");
  rmSync(dataDir, { recursive: true, force: true });
  if (serverUrl) {
    const sql = connectPostgres(serverUrl, { max: 1, onnotice: () => {} });
    for (const service of ["auth", "catalog", "order", "payment"]) {
      await sql.unsafe(`drop database if exists "${prefix}_${service}" with (force)`);
    }
    await sql.end();
  }
});

describe("the README's example", () => {
  it("runs verbatim with bash, curl and jq and ends in a CONFIRMED order", () => {
    // .ci/run installs jq where it is missing; a newcomer is told to at the README's top.
    const jq = spawnSync("bash", ["-c", "command -v jq"], { encoding: "utf8" });
    expect(jq.status, "jq is not installed: apt-get install -y jq (the README needs it)").toBe(0);
    const script = readmeExample(readFileSync(join(repoRoot, "README.md"), "utf8"));
    // -e and pipefail: any failing command fails the run, as the last echo alone would not.
    const output = execFileSync("bash", ["-euo", "pipefail", "-c", script], {
      env: { ...process.env, THINMESH_URL: ingress },
      encoding: "utf8",
      timeout: 60_000,
    });
    expect(output.trim().split("\n").at(-1)).toMatch(
      /^order [0-9a-f-]{36}: ORDER_STATUS_CONFIRMED$/,
    );
    expect(output).toContain('"email":"ada-');
  });
});
