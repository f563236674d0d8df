#!/usr/bin/env node
// `npm start`: the whole shop on this machine behind mesh/local. Ctrl-C stops everything.
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { MeshConfigError } from "./istio.js";
import { accessLine, readable } from "./print.js";
import { devAdmin, StartError, startLocalShop } from "./shop.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "../../..");
const args = process.argv.slice(2);

const help = `Usage: npm start [-- --json]

Builds the services (tsc -b, incremental) and runs the whole shop on this machine behind
mesh/local: every instance of kustomize/overlays/dev as a supervised process, each behind its
sidecars (mTLS, authorization, routes, retries, … from mesh/istio, reloaded live on edit), and
the ingress gateway.

Options:
  --json       print every log record as the JSON line it is (default: one readable line each)
  --help, -h   this text

Environment:
  THINMESH_INGRESS_PORT     the ingress port on 127.0.0.1 (default 8080; 0 lets the system pick)
  THINMESH_ADMIN_PORT       mesh/local's admin port: /stats/prometheus (Istio's metrics),
                            /endpoints, /access (default 15090, Envoy's; 0 lets the system pick)
  THINMESH_READY_TIMEOUT_S  how long to wait for every service to be ready (default 90)
  DATABASE_URL              a Postgres server (postgres://user@host:5432/db); each service gets
                            its own database on it. Unset: an embedded PGlite database each.
  THINMESH_DB_PREFIX        with DATABASE_URL: the databases are <prefix>_<service> (default thinmesh)
  THINMESH_DATA_DIR         PGlite keeps <dir>/<service>, the mesh's CA <dir>/mesh-ca, the apps'
                            sockets <dir>/run (default .data)
  THINMESH_ACCESS_LOG       "off" hides the access records (one line per call at the calling
                            proxy; every proxy's record with --json)
  THINMESH_NODE_ARGS        extra node flags for every service (e.g. --cpu-prof)
  LOG_LEVEL                 the services' log level (default info)

The services listen on Unix sockets under <data dir>/run that only their sidecars use; every
proxy port is assigned by the operating system at each start. THINMESH_BASE_PORT is no longer
used. \`npm run demo\` reads THINMESH_URL (the ingress
URL, default http://127.0.0.1:8080).
`;

if (args.includes("--help") || args.includes("-h")) {
  process.stdout.write(help);
  process.exit(0);
}
const unknown = args.filter((a) => a !== "--json");
if (unknown.length) {
  process.stderr.write(`unknown argument ${unknown.join(" ")}\n\n${help}`);
  process.exit(2);
}
const json = args.includes("--json");

const colors: Record<string, number> = {
  auth: 35,
  catalog: 36,
  order: 33,
  payment: 32,
  ingress: 34,
  mesh: 34,
};

/** The color of an instance's lines is its service's (payment-v2-0 → payment). */
const proxyName = (workload: string) =>
  workload === "istio-ingressgateway" ? "ingress" : workload;

function print(name: string, line: string) {
  if (json) {
    process.stdout.write(`${line}\n`);
    return;
  }
  const service = name.replace(/(-v\d+)?-\d+$/, "");
  process.stdout.write(`\x1b[${colors[service] ?? 0}m${name.padEnd(8)}\x1b[0m ${readable(line)}\n`);
}
const record = (name: string, level: string, msg: string, fields: Record<string, unknown>) =>
  print(
    name,
    JSON.stringify({ level, time: new Date().toISOString(), service: name, msg, ...fields }),
  );
const event = (name: string, msg: string, fields: Record<string, unknown>) =>
  record(name, "info", msg, fields);

function fail(message: string, code: number): never {
  if (json) record("mesh", "error", "thinmesh did not start", { err: message });
  process.stderr.write(`\nthinmesh did not start: ${message}\n`);
  process.exit(code);
}

const settings = process.env;
const ingressPort = Number(settings.THINMESH_INGRESS_PORT ?? 8080);
const adminPort = Number(settings.THINMESH_ADMIN_PORT ?? 15090);
if (!Number.isInteger(adminPort) || adminPort < 0 || adminPort > 65535) {
  fail(
    `THINMESH_ADMIN_PORT must be a port number from 0 to 65535 (got ${JSON.stringify(settings.THINMESH_ADMIN_PORT)})`,
    2,
  );
}
if (!Number.isInteger(ingressPort) || ingressPort < 0 || ingressPort > 65535) {
  fail(
    `THINMESH_INGRESS_PORT must be a port number from 0 to 65535 (got ${JSON.stringify(settings.THINMESH_INGRESS_PORT)})`,
    2,
  );
}
const readyTimeoutS = Number(settings.THINMESH_READY_TIMEOUT_S ?? 90);
if (!(readyTimeoutS > 0)) {
  fail(
    `THINMESH_READY_TIMEOUT_S must be a number of seconds above 0 (got ${JSON.stringify(settings.THINMESH_READY_TIMEOUT_S)})`,
    2,
  );
}
if (settings.THINMESH_BASE_PORT) {
  record(
    "mesh",
    "warn",
    "THINMESH_BASE_PORT is no longer used: the services' ports come from the operating system",
    {},
  );
}

const accessLog = settings.THINMESH_ACCESS_LOG !== "off";
const embedded = !settings.DATABASE_URL;
const dataDir = settings.THINMESH_DATA_DIR ?? join(root, ".data");
let shop: Awaited<ReturnType<typeof startLocalShop>>;
try {
  shop = await startLocalShop({
    root,
    ingressPort,
    statsPort: adminPort,
    databaseUrl: settings.DATABASE_URL || undefined,
    databasePrefix: settings.THINMESH_DB_PREFIX ?? "thinmesh",
    dataDir,
    logLevel: settings.LOG_LEVEL ?? "info",
    events: { line: print, event },
    onRecord(entry) {
      if (!accessLog) return;
      if (json) print("mesh", JSON.stringify({ level: "info", msg: "access", ...entry }));
      else if (entry.reporter === "source")
        print(proxyName(entry.source_workload), accessLine(entry));
    },
    onConfig(change) {
      if (change.ok) event("mesh", "configuration pushed", { files: change.files.length });
      else
        record("mesh", "warn", "configuration refused; the last good one stays in force", {
          err: change.message,
        });
    },
  });
} catch (error) {
  if (error instanceof MeshConfigError) {
    process.stderr.write(`mesh/local refuses to start: ${error.message}\n`);
    process.exit(78);
  }
  if (error instanceof StartError) fail(error.message, 1);
  throw error;
}
event("mesh", "listening", {
  ingress: shop.ingressUrl,
  admin: shop.adminUrl,
  instances: shop.instances.map((i) => i.id),
});
for (const { instance, reason } of shop.notStarted) {
  record("mesh", "warn", `${instance} not started`, { err: reason });
}
event("mesh", `waiting up to ${readyTimeoutS} s for the services to be ready`, {
  database: embedded ? `PGlite in ${dataDir}` : "Postgres",
});

let stopping = false;
async function stop(code: number) {
  if (stopping) return;
  stopping = true;
  if (code === 0) process.stdout.write("\nstopping…\n");
  await shop.stop();
  process.exit(code);
}
process.on("SIGINT", () => stop(0));
process.on("SIGTERM", () => stop(0));

try {
  await shop.ready(readyTimeoutS * 1000);
} catch (error) {
  if (!(error instanceof StartError)) throw error;
  if (json) record("mesh", "error", "thinmesh did not start", { err: error.message });
  process.stderr.write(`\nthinmesh did not start: ${error.message}\n`);
  await stop(1);
}
if (stopping) await new Promise(() => {}); // Ctrl-C while starting: stop() exits.

const url = shop.ingressUrl;
const demo = url === "http://127.0.0.1:8080" ? "npm run demo" : `THINMESH_URL=${url} npm run demo`;
process.stdout.write(`
thinmesh is ready at ${url} (${embedded ? `embedded PGlite databases in ${dataDir}` : "Postgres"})
mesh/local enforces every resource in mesh/istio (edits apply live): mTLS between ${shop.instances.length} instances, authorization, JWT, routes, retries, timeouts, faults, pools, outlier detection, rate limits${shop.notStarted.length ? `\nnot started: ${shop.notStarted.map((n) => n.instance).join(", ")} (PGlite: one instance per service; DATABASE_URL runs them all)` : ""}
Istio's metrics: ${shop.adminUrl}/stats/prometheus   access records: ${shop.adminUrl}/access

Try it:
  curl -s ${url}/shop.auth.v1.AuthService/Register -H 'content-type: application/json' \\
    -d '{"email":"ada@example.com","password":"correct horse battery"}'
  curl -s ${url}/shop.auth.v1.AuthService/Login -H 'content-type: application/json' \\
    -d '{"email":"ada@example.com","password":"correct horse battery"}'
  curl -s ${url}/shop.catalog.v1.CatalogService/ListProducts -H 'content-type: application/json' -d '{}'
  ${demo.padEnd(18)}  # a whole order, start to CONFIRMED, and one CANCELLED

Admin (dev only): ${devAdmin.email} / ${devAdmin.password}. Ctrl-C stops everything.
`);
