#!/usr/bin/env node
// `npm start`: the whole shop on this machine behind mesh/local. Ctrl-C stops everything.
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { MeshConfigError } from "./istio.js";
import { devAdmin, startLocalShop } from "./shop.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "../../..");
const json = process.argv.includes("--json");
const colors: Record<string, number> = {
  auth: 35,
  catalog: 36,
  order: 33,
  payment: 32,
  ingress: 34,
};

function print(name: string, line: string) {
  if (json) {
    process.stdout.write(`${line}\n`);
    return;
  }
  let text = line;
  try {
    const { level, time, msg, service: _s, version: _v, err, ...rest } = JSON.parse(line);
    const extra = Object.keys(rest).length ? ` ${JSON.stringify(rest)}` : "";
    text = `${String(time ?? "").slice(11, 19)} ${level ?? ""} ${msg ?? ""}${extra}${err ? ` ${err.message}` : ""}`;
  } catch {}
  process.stdout.write(`\x1b[${colors[name] ?? 0}m${name.padEnd(8)}\x1b[0m ${text}\n`);
}
const event = (name: string, msg: string, fields: Record<string, unknown>) =>
  print(
    name,
    JSON.stringify({
      level: "info",
      time: new Date().toISOString(),
      service: name,
      msg,
      ...fields,
    }),
  );

const accessLog = process.env.THINMESH_ACCESS_LOG !== "off";
let shop: Awaited<ReturnType<typeof startLocalShop>>;
try {
  shop = await startLocalShop({
    root,
    ingressPort: Number(process.env.THINMESH_INGRESS_PORT ?? 8080),
    basePort: Number(process.env.THINMESH_BASE_PORT ?? 8081),
    databaseUrl: process.env.DATABASE_URL || undefined,
    databasePrefix: process.env.THINMESH_DB_PREFIX ?? "thinmesh",
    dataDir: process.env.THINMESH_DATA_DIR ?? join(root, ".data"),
    logLevel: process.env.LOG_LEVEL ?? "info",
    events: { line: print, event },
    onHop: (hop) =>
      accessLog && print("ingress", JSON.stringify({ level: "info", msg: "access", ...hop })),
  });
} catch (error) {
  if (error instanceof MeshConfigError) {
    process.stderr.write(`mesh/local refuses to start: ${error.message}\n`);
    process.exit(78);
  }
  throw error;
}

let stopping = false;
async function stop() {
  if (stopping) return;
  stopping = true;
  process.stdout.write("\nstopping…\n");
  await shop.stop();
  process.exit(0);
}
process.on("SIGINT", stop);
process.on("SIGTERM", stop);

try {
  await shop.ready();
} catch (error) {
  process.stderr.write(`${(error as Error).message}\n`);
  await stop();
}
const url = shop.ingressUrl;
process.stdout.write(`
thinmesh is ready at ${url} (${process.env.DATABASE_URL ? "Postgres" : "embedded PGlite databases in .data/"})
mesh/local enforces the Gateway and its VirtualServices; not yet: ${shop.notEnforced.join(", ") || "nothing else"}

Try it:
  curl -s ${url}/shop.auth.v1.AuthService/Register -H 'content-type: application/json' \\
    -d '{"email":"ada@example.com","password":"correct horse battery"}'
  curl -s ${url}/shop.auth.v1.AuthService/Login -H 'content-type: application/json' \\
    -d '{"email":"ada@example.com","password":"correct horse battery"}'
  curl -s ${url}/shop.catalog.v1.CatalogService/ListProducts -H 'content-type: application/json' -d '{}'
  npm run demo        # a whole order, start to CONFIRMED, and one CANCELLED

Admin (dev only): ${devAdmin.email} / ${devAdmin.password}. Ctrl-C stops everything.
`);
