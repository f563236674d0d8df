#!/usr/bin/env node
// Measures each service's process start → /readyz 200, and its idle RSS, against the real
// Postgres (DATABASE_URL or 127.0.0.1:5432) and on the embedded PGlite.
// Usage: npm run build && node bench/startup.js [runs=5]
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import postgres from "postgres";
import { freePort } from "./ports.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const runs = Number(process.argv[2] ?? 5);
const serverUrl = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const services = ["auth", "catalog", "order", "payment"];
// Peers are only named, not called, while a service starts and idles.
const peer = "http://127.0.0.1:9";
const jwks = { AUTH_JWKS_URL: `${peer}/.well-known/jwks.json` };
const extraEnv = {
  catalog: { ...jwks, ORDER_URL: peer },
  order: { ...jwks, CATALOG_URL: peer, PAYMENT_URL: peer },
  payment: { ...jwks, ORDER_URL: peer },
};

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

async function measure(service, databaseUrl) {
  const port = await freePort();
  const started = performance.now();
  const child = spawn(process.execPath, [join(root, "services", service, "dist/main.js")], {
    env: {
      ...process.env,
      PORT: String(port),
      HOST: "127.0.0.1",
      LOG_LEVEL: "warn",
      ...(databaseUrl ? { DATABASE_URL: databaseUrl } : { DATABASE_URL: "" }),
      ...extraEnv[service],
    },
    stdio: ["ignore", "ignore", "inherit"],
  });
  let readyMs;
  while (readyMs === undefined) {
    if (child.exitCode !== null) throw new Error(`${service} exited with ${child.exitCode}`);
    const ok = await fetch(`http://127.0.0.1:${port}/readyz`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) readyMs = performance.now() - started;
    else await sleep(5);
  }
  await sleep(3000); // idle
  const status = readFileSync(`/proc/${child.pid}/status`, "utf8");
  const rssMb = Number(status.match(/VmRSS:\s+(\d+)/)[1]) / 1024;
  const stopping = performance.now();
  child.kill("SIGTERM");
  await new Promise((resolve) => child.on("exit", resolve));
  return { readyMs, rssMb, stopMs: performance.now() - stopping };
}

const admin = postgres(serverUrl, { max: 1, onnotice: () => {} });
console.log(`runs per case: ${runs}; medians`);
console.log("service  database              start→ready  idle RSS  SIGTERM→exit");
for (const service of services) {
  const name = `bench_startup_${service}_${process.pid}`;
  await admin.unsafe(`create database "${name}"`);
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  try {
    const cases = [
      ["postgres, empty db", () => measure(service, url.toString()), 1],
      ["postgres, migrated", () => measure(service, url.toString()), runs],
      ["pglite, in memory", () => measure(service, undefined), Math.min(runs, 3)],
    ];
    for (const [label, run, count] of cases) {
      const results = [];
      for (let i = 0; i < count; i++) results.push(await run());
      const line = [
        service.padEnd(8),
        label.padEnd(21),
        `${median(results.map((r) => r.readyMs)).toFixed(0)} ms`.padStart(11),
        `${median(results.map((r) => r.rssMb)).toFixed(0)} MB`.padStart(9),
        `${median(results.map((r) => r.stopMs)).toFixed(0)} ms`.padStart(13),
      ];
      console.log(line.join(" "));
    }
  } finally {
    await admin.unsafe(`drop database if exists "${name}" with (force)`);
  }
}
await admin.end();
