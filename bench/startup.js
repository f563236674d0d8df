#!/usr/bin/env node
// What a newcomer waits for and what the shop costs when idle: `npm start` on a fresh clone
// (its first start: build and new embedded databases), a later start, and the idle RSS of
// every process, on the embedded PGlite and on the real Postgres.
//
// "ready in" is the wall-clock time from `npm start` to its "ready" banner; "CPU" what the shop's
// processes (mesh/local and the services, not npm or tsc) had used by then.
//
// Usage: node bench/startup.js [--commit <rev>] [--idle <s>] [--services <runs>]
//   --commit    what to clone (default HEAD; committed work only); e.g. an older commit for a
//               before/after comparison
//   --idle      seconds the shop idles before RSS is read (default 10)
//   --services  also each service alone, start → ready and idle RSS, <runs> times each (in
//               this checkout, after npm run build)
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import postgres from "postgres";

const root = join(import.meta.dirname, "..");
const { values: options } = parseArgs({
  options: {
    commit: { type: "string", default: "HEAD" },
    idle: { type: "string", default: "10" },
    services: { type: "string" },
  },
});
const idleMs = Number(options.idle) * 1000;
const serverUrl = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const services = ["auth", "catalog", "order", "payment"];
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const rssMb = (pid) => {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(status.match(/VmRSS:\s+(\d+)/)[1]) / 1024;
};
const parentOf = (pid) =>
  Number(readFileSync(`/proc/${pid}/status`, "utf8").match(/PPid:\s+(\d+)/)[1]);
const seconds = (ms) => `${(ms / 1000).toFixed(1)} s`;
// CPU time (user + system) a process has used, in ms: on a loaded machine a steadier figure
// than the wall-clock time to ready.
const cpuMs = (pid) => {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
};

/** `npm start -- --json` in dir until it is ready; then idle, RSS per process, Ctrl-C. */
async function npmStart(dir, env) {
  const started = performance.now();
  // Its own process group, so that SIGINT reaches npm and the shop as Ctrl-C would.
  const child = spawn("npm", ["start", "--", "--json"], {
    cwd: dir,
    env: { ...process.env, THINMESH_ACCESS_LOG: "off", ...env },
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  });
  let output = "";
  child.stdout.on("data", (chunk) => {
    output += chunk;
  });
  child.stderr.on("data", (chunk) => {
    output += chunk;
  });
  const exited = new Promise((resolve) => child.on("exit", resolve));
  while (!output.includes("thinmesh is ready")) {
    if (child.exitCode !== null) {
      // An older build gave up after 60 s on a loaded machine (and exited 0): a figure too.
      const cause = output
        .trim()
        .split("\n")
        .filter((l) => !/^(stopping|\s*$)/.test(l))
        .at(-1);
      return { failedMs: performance.now() - started, cause };
    }
    if (performance.now() - started > 300_000) {
      process.kill(-child.pid, "SIGINT");
      throw new Error(`npm start not ready within 300 s:\n${output.slice(-3000)}`);
    }
    await sleep(50);
  }
  const readyMs = performance.now() - started;
  const pids = Object.fromEntries(
    [...output.matchAll(/"service":"(\w+)","msg":"process started","pid":(\d+)/g)].map((m) => [
      m[1],
      Number(m[2]),
    ]),
  );
  const shopPids = [parentOf(pids.auth), ...services.map((name) => pids[name])];
  const cpuToReadyMs = shopPids.reduce((sum, pid) => sum + cpuMs(pid), 0);
  await sleep(idleMs);
  const rss = Object.fromEntries(services.map((name) => [name, rssMb(pids[name])]));
  rss["mesh/local"] = rssMb(parentOf(pids.auth));
  process.kill(-child.pid, "SIGINT");
  await exited;
  return { readyMs, cpuToReadyMs, rss };
}

function row(label, result) {
  if (result.failedMs !== undefined) {
    console.log(`${label.padEnd(30)} failed after ${seconds(result.failedMs)}: ${result.cause}`);
    return;
  }
  const total = Object.values(result.rss).reduce((a, b) => a + b, 0);
  const perProcess = ["mesh/local", ...services]
    .map((name) => `${String(Math.round(result.rss[name])).padStart(5)}`)
    .join(" ");
  console.log(
    `${label.padEnd(30)} ${seconds(result.readyMs).padStart(8)} ${seconds(result.cpuToReadyMs).padStart(8)}  ${perProcess} ${String(Math.round(total)).padStart(6)} MB`,
  );
}

async function wholeShop() {
  const clone = mkdtempSync(join(tmpdir(), "thinmesh-startup-"));
  const commit = execFileSync("git", ["rev-parse", "--short", options.commit], { cwd: root })
    .toString()
    .trim();
  execFileSync("git", ["worktree", "add", "--detach", clone, commit], {
    cwd: root,
    stdio: "ignore",
  });
  const prefix = `bench_startup_${process.pid}`;
  try {
    const installStarted = performance.now();
    execFileSync("npm", ["ci", "--no-audit", "--no-fund"], { cwd: clone, stdio: "ignore" });
    const installMs = performance.now() - installStarted;
    // Before ports came from the OS, npm start needed a base port with three free ones after it.
    const mainSource = readFileSync(join(clone, "mesh/local/src/main.ts"), "utf8");
    const legacy = mainSource.includes("basePort:")
      ? { THINMESH_BASE_PORT: String(20_000 + Math.floor(Math.random() * 10_000)) }
      : {};
    const env = { THINMESH_INGRESS_PORT: "0", ...legacy };

    console.log(
      `npm start at ${commit} in a fresh clone; ${cpus().length} cores, node ${process.version}, load ${readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ")}`,
    );
    console.log(`npm ci: ${seconds(installMs)} (not counted below)`);
    console.log(
      `${"".padEnd(30)} ${"ready in".padStart(8)} ${"CPU".padStart(8)}  ${["mesh/local", ...services].map((n) => n.slice(0, 5).padStart(5)).join(" ")} ${"total".padStart(6)} (idle RSS, MB, after ${options.idle} s)`,
    );
    row("PGlite, first start (build)", await npmStart(clone, env));
    if (!existsSync(join(clone, ".data"))) throw new Error("npm start made no .data directory");
    row("PGlite, later start", await npmStart(clone, env));
    const pg = { ...env, DATABASE_URL: serverUrl, THINMESH_DB_PREFIX: prefix };
    row("Postgres, first start", await npmStart(clone, pg));
    row("Postgres, later start", await npmStart(clone, pg));
  } finally {
    const admin = postgres(serverUrl, { max: 1, onnotice: () => {} });
    for (const name of services) {
      await admin.unsafe(`drop database if exists "${prefix}_${name}" with (force)`);
    }
    await admin.end();
    execFileSync("git", ["worktree", "remove", "--force", clone], { cwd: root, stdio: "ignore" });
    rmSync(clone, { recursive: true, force: true });
  }
}

// Each service alone: process start → /readyz 200, idle RSS, SIGTERM → exit. Peers are only
// named, not called, while a service starts and idles.
const peer = "http://127.0.0.1:9";
const jwks = { AUTH_JWKS_URL: `${peer}/.well-known/jwks.json` };
const extraEnv = {
  catalog: { ...jwks, ORDER_URL: peer },
  order: { ...jwks, CATALOG_URL: peer, PAYMENT_URL: peer },
  payment: { ...jwks, ORDER_URL: peer },
};

async function measureService(service, databaseUrl) {
  const started = performance.now();
  // Port 0: the service reports the port the OS gave it in its "listening" line.
  const child = spawn(process.execPath, [join(root, "services", service, "dist/main.js")], {
    env: {
      ...process.env,
      PORT: "0",
      HOST: "127.0.0.1",
      LOG_LEVEL: "info",
      ...(databaseUrl ? { DATABASE_URL: databaseUrl } : { DATABASE_URL: "" }),
      ...extraEnv[service],
    },
    stdio: ["ignore", "pipe", "inherit"],
  });
  let output = "";
  child.stdout.on("data", (chunk) => {
    output += chunk;
  });
  let url;
  let readyMs;
  while (readyMs === undefined) {
    if (child.exitCode !== null) throw new Error(`${service} exited with ${child.exitCode}`);
    url ??= output
      .split("\n")
      .find((line) => line.includes("listening; waiting for the database"))
      ?.match(/"url":"([^"]+)"/)?.[1];
    const ok =
      url &&
      (await fetch(`${url}/readyz`).then(
        (r) => r.ok,
        () => false,
      ));
    if (ok) readyMs = performance.now() - started;
    else await sleep(5);
  }
  await sleep(3000); // idle
  const rss = rssMb(child.pid);
  const stopping = performance.now();
  child.kill("SIGTERM");
  await new Promise((resolve) => child.on("exit", resolve));
  return { readyMs, rssMb: rss, stopMs: performance.now() - stopping };
}

async function eachService(runs) {
  const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
  const admin = postgres(serverUrl, { max: 1, onnotice: () => {} });
  console.log(`\neach service alone (this checkout's dist/), ${runs} runs per case; medians`);
  console.log("service  database              start→ready  idle RSS  SIGTERM→exit");
  for (const service of services) {
    const name = `bench_startup_${service}_${process.pid}`;
    await admin.unsafe(`create database "${name}"`);
    const url = new URL(serverUrl);
    url.pathname = `/${name}`;
    try {
      const cases = [
        ["postgres, empty db", () => measureService(service, url.toString()), 1],
        ["postgres, migrated", () => measureService(service, url.toString()), runs],
        ["pglite, in memory", () => measureService(service, undefined), Math.min(runs, 3)],
      ];
      for (const [label, run, count] of cases) {
        const results = [];
        for (let i = 0; i < count; i++) results.push(await run());
        console.log(
          [
            service.padEnd(8),
            label.padEnd(21),
            `${median(results.map((r) => r.readyMs)).toFixed(0)} ms`.padStart(11),
            `${median(results.map((r) => r.rssMb)).toFixed(0)} MB`.padStart(9),
            `${median(results.map((r) => r.stopMs)).toFixed(0)} ms`.padStart(13),
          ].join(" "),
        );
      }
    } finally {
      await admin.unsafe(`drop database if exists "${name}" with (force)`);
    }
  }
  await admin.end();
}

await wholeShop();
if (options.services) await eachService(Number(options.services));
