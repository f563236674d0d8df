// The README's example block, run as it is with bash, curl and jq against a started shop,
// ends in a CONFIRMED order.
import { execFileSync, spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { testPostgresUrl } from "@thinmesh/platform/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { npmStart } from "./npm-start.js";
import { listeningUrls, repoRoot, type Spawned } from "./processes.js";

const serverUrl = await testPostgresUrl();
const shops = npmStart("readme", serverUrl);
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
  shop = shops.start();
  await shop.waitFor(/thinmesh is ready/, 90_000);
  ingress = listeningUrls(shop.output()).ingress;
}, 120_000);

afterAll(() => shops.stop());

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
