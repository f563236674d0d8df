#!/usr/bin/env node
// Runs bench/orders.js on another commit and on this checkout, alternately, so that both
// builds meet the same drift of this shared machine's speed (it changes by several times
// within a day: comparing with a run from an hour ago says little). Usage:
//   node bench/compare.js <commit> [--runs 2] [-- <bench/orders.js options>]
// The other commit is checked out in a temporary git worktree, installed and built there,
// and removed at the end. Build this checkout first (npm run build).
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";

const separator = process.argv.indexOf("--");
const own = separator === -1 ? process.argv.slice(2) : process.argv.slice(2, separator);
const benchArgs = separator === -1 ? [] : process.argv.slice(separator + 1);
const { values, positionals } = parseArgs({
  args: own,
  allowPositionals: true,
  options: { runs: { type: "string", default: "2" } },
});
const [commit] = positionals;
if (!commit) {
  console.error("usage: node bench/compare.js <commit> [--runs 2] [-- <bench/orders.js options>]");
  process.exit(2);
}
const here = join(import.meta.dirname, "..");
const git = (...args) => execFileSync("git", args, { cwd: here, encoding: "utf8" }).trim();
const base = git("rev-parse", "--short", commit);
const head = git("rev-parse", "--short", "HEAD");
const dirty = git("status", "--porcelain") ? "+changes" : "";

const worktree = join(mkdtempSync(join(tmpdir(), "thinmesh-compare-")), base);
try {
  console.log(`checking out ${base} in ${worktree}, installing and building`);
  git("worktree", "add", "--detach", worktree, base);
  for (const script of [["ci"], ["run", "build"]]) {
    const result = spawnSync("npm", script, {
      cwd: worktree,
      stdio: ["ignore", "ignore", "inherit"],
    });
    if (result.status !== 0) throw new Error(`npm ${script.join(" ")} failed in ${worktree}`);
  }
  const builds = [
    { label: base, dir: worktree },
    { label: `${head}${dirty}`, dir: here },
  ];
  console.log(
    "each run: placed, failed, confirmed/s, PlaceOrder p50 / p99, to CONFIRMED p50 / p99 | CPU ms per order | context switches per order | events per call",
  );
  for (let run = 1; run <= Number(values.runs); run++) {
    for (const { label, dir } of builds) {
      const result = spawnSync(process.execPath, ["bench/orders.js", ...benchArgs], {
        cwd: dir,
        encoding: "utf8",
      });
      // The phase's figures, its CPU per order and its context switches: a line each.
      const lines = result.stdout
        .split("\n")
        .filter((line) => line.startsWith("through the ingress"))
        .map((line) => line.replace("through the ingress", "").replace(/\s+/g, " ").trim());
      console.log(`run ${run}, ${label.padEnd(16)} ${lines.join(" | ") || result.stderr.trim()}`);
    }
  }
} finally {
  spawnSync("git", ["worktree", "remove", "--force", worktree], { cwd: here });
  rmSync(join(worktree, ".."), { recursive: true, force: true });
}
