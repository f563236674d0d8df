#!/usr/bin/env node
// `npm start`: runs the shop's services on this machine as supervised child processes, each
// with its own embedded database (or its own database on DATABASE_URL's server), and prints
// how to call them. Ctrl-C stops everything cleanly.
import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import postgres from "postgres";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const json = process.argv.includes("--json");
const basePort = Number(process.env.THINMESH_BASE_PORT ?? 8081);
const host = "127.0.0.1";
const adminEmail = "admin@thinmesh.local";
// Dev-only credentials for the provisioned admin; never use them outside a laptop.
const adminPassword = "dev-only-admin-password";

const services = [
  {
    name: "auth",
    port: basePort,
    env: () => ({ ADMIN_EMAIL: adminEmail, ADMIN_PASSWORD: adminPassword }),
  },
  {
    name: "catalog",
    port: basePort + 1,
    env: () => ({
      AUTH_JWKS_URL: `http://${host}:${basePort}/.well-known/jwks.json`,
      SEED_PRODUCTS: "true",
    }),
  },
];

/** With DATABASE_URL, each service gets its own database on that server. */
async function databaseUrls() {
  const serverUrl = process.env.DATABASE_URL;
  if (!serverUrl) return undefined;
  const admin = postgres(serverUrl, { max: 1, onnotice: () => {} });
  const urls = {};
  try {
    for (const { name } of services) {
      const database = `${process.env.THINMESH_DB_PREFIX ?? "thinmesh"}_${name}`;
      const [exists] = await admin`select 1 from pg_database where datname = ${database}`;
      if (!exists) await admin.unsafe(`create database "${database}"`);
      const url = new URL(serverUrl);
      url.pathname = `/${database}`;
      urls[name] = url.toString();
    }
  } finally {
    await admin.end();
  }
  return urls;
}

const colors = { auth: 35, catalog: 36, order: 33, payment: 32 };
function print(name, line) {
  if (json) {
    process.stdout.write(`${line}\n`);
    return;
  }
  let text = line;
  try {
    const { level, time, msg, service, version, err, ...rest } = JSON.parse(line);
    const extra = Object.keys(rest).length ? ` ${JSON.stringify(rest)}` : "";
    text = `${time?.slice(11, 19) ?? ""} ${level} ${msg ?? ""}${extra}${err ? ` ${err.message}` : ""}`;
  } catch {}
  process.stdout.write(`\x1b[${colors[name] ?? 0}m${name.padEnd(8)}\x1b[0m ${text}\n`);
}

let stopping = false;
const children = new Map();

function run(service, env, restarts = 0) {
  const child = spawn(process.execPath, [join(root, "services", service.name, "dist/main.js")], {
    cwd: root,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.set(service.name, child);
  const event = (msg, fields) =>
    print(
      service.name,
      JSON.stringify({
        level: "info",
        time: new Date().toISOString(),
        service: service.name,
        msg,
        ...fields,
      }),
    );
  event("process started", { pid: child.pid });
  createInterface({ input: child.stdout }).on("line", (line) => print(service.name, line));
  createInterface({ input: child.stderr }).on("line", (line) => print(service.name, line));
  const startedAt = Date.now();
  child.on("exit", (code, signal) => {
    children.delete(service.name);
    if (stopping) return;
    // Like a pod: restart with a growing delay, reset once it has run for a while.
    const attempt = Date.now() - startedAt > 30_000 ? 0 : restarts + 1;
    const delay = Math.min(500 * 2 ** attempt, 15_000);
    event("process exited; restarting", { exit: signal ?? code, restartInMs: delay });
    setTimeout(() => !stopping && run(service, env, attempt), delay);
  });
}

async function waitReady(service, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      if ((await fetch(`http://${host}:${service.port}/readyz`)).ok) return;
    } catch {}
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw new Error(`${service.name} did not become ready within ${timeoutMs / 1000} s`);
}

function stop() {
  if (stopping) return;
  stopping = true;
  process.stdout.write("\nstopping…\n");
  for (const child of children.values()) child.kill("SIGTERM");
  const force = setTimeout(() => {
    for (const child of children.values()) child.kill("SIGKILL");
  }, 15_000);
  const check = setInterval(() => {
    if (children.size === 0) {
      clearInterval(check);
      clearTimeout(force);
      process.exit(0);
    }
  }, 50);
}
process.on("SIGINT", stop);
process.on("SIGTERM", stop);

const urls = await databaseUrls();
for (const service of services) {
  const dataDir = join(process.env.THINMESH_DATA_DIR ?? join(root, ".data"), service.name);
  if (!urls) mkdirSync(dataDir, { recursive: true });
  run(service, {
    PORT: String(service.port),
    HOST: host,
    PUBLIC_URL: `http://${host}:${service.port}`,
    LOG_LEVEL: process.env.LOG_LEVEL ?? "info",
    ...(urls ? { DATABASE_URL: urls[service.name] } : { PGLITE_DATA_DIR: dataDir }),
    ...service.env(),
  });
}
try {
  await Promise.all(services.map((service) => waitReady(service)));
} catch (error) {
  process.stderr.write(`${error.message}\n`);
  stop();
}
const [auth, catalog] = services.map((s) => `http://${host}:${s.port}`);
process.stdout.write(`
thinmesh is ready (${urls ? "Postgres" : "embedded PGlite databases in .data/"}):
  auth     ${auth}
  catalog  ${catalog}

Try it:
  curl -s ${auth}/shop.auth.v1.AuthService/Register -H 'content-type: application/json' \\
    -d '{"email":"ada@example.com","password":"correct horse battery"}'
  curl -s ${auth}/shop.auth.v1.AuthService/Login -H 'content-type: application/json' \\
    -d '{"email":"ada@example.com","password":"correct horse battery"}'
  curl -s ${catalog}/shop.catalog.v1.CatalogService/ListProducts -H 'content-type: application/json' -d '{}'
  curl -s ${auth}/.well-known/jwks.json

Admin (dev only): ${adminEmail} / ${adminPassword}. Ctrl-C stops everything.
`);
