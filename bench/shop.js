// What the benchmarks share: the local shop on the real Postgres (each service on a database
// of its own, dropped at the end), through its sidecars or with them bypassed, and the CPU and
// context switches of its processes, from /proc (Linux).
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { dropShopDatabases, startLocalShop, workloadNames } from "../mesh/local/dist/shop.js";
import { get } from "./http.js";

// On this machine the services reach Postgres through its Unix socket if there is one (as a
// deployment next to its database would), else over TCP; DATABASE_URL decides if set.
const socketDirectory = "/var/run/postgresql";
export const serverUrl =
  process.env.DATABASE_URL ??
  (existsSync(`${socketDirectory}/.s.PGSQL.5432`)
    ? `postgres://postgres@localhost/postgres?host=${socketDirectory}`
    : "postgres://postgres@127.0.0.1:5432/postgres");

export const root = join(import.meta.dirname, "..");

/**
 * The shop as `npm start` runs it, on fresh databases. `env(dataDir)` gives settings per
 * workload (files it names may go in dataDir, removed at the end); `bypassSidecars` starts it
 * without the sidecars (the apps call each other directly, the ingress forwards plaintext),
 * to measure what they cost; `onRecord` receives every access record of the ingress and the
 * sidecars. Returns the shop, each workload's database URL and `close()`.
 * Several may run at once: each has its own ports, sockets and databases.
 */
export async function startBenchShop(
  name,
  env = () => ({}),
  { bypassSidecars = false, onRecord = () => {} } = {},
) {
  const prefix = `bench_${name}_${randomBytes(3).toString("hex")}`;
  const dataDir = mkdtempSync(join(tmpdir(), `thinmesh-bench-${name}-`));
  const shop = await startLocalShop({
    root,
    ingressPort: 0, // the operating system picks
    statsPort: 0,
    ...(bypassSidecars && { bypassSidecars: true }),
    databaseUrl: serverUrl,
    databasePrefix: prefix,
    dataDir,
    logLevel: "warn",
    env: env(dataDir),
    events: {
      line: (workload, line) =>
        /"level":"(error|fatal)"/.test(line) && console.error(workload, line),
      event: () => {},
    },
    onRecord,
  });
  return {
    shop,
    databaseUrls: shop.databaseUrls,
    async close() {
      await shop.stop();
      rmSync(dataDir, { recursive: true, force: true });
      await dropShopDatabases(serverUrl, prefix);
    },
  };
}

/**
 * Writes, in dir, an event subscriptions file (EVENT_SUBSCRIPTIONS_FILE) in which nobody
 * subscribes to anything, with config/subscriptions.yaml's producers (an event sink accepts an
 * event type only from its declared producer); returns its path. A service given it publishes
 * to no one.
 */
export function noSubscriptionsFile(dir) {
  const committed = readFileSync(join(root, "config/subscriptions.yaml"), "utf8");
  const producers = committed.indexOf("\nproducers:");
  if (producers === -1) throw new Error("config/subscriptions.yaml declares no producers");
  const path = join(dir, "no-subscriptions.yaml");
  writeFileSync(path, `subscriptions: {}${committed.slice(producers)}`);
  return path;
}

/**
 * Where each running instance's app itself listens, past its sidecar: its Unix socket (a
 * `unix:` base for ./http.js), or with the sidecars bypassed its loopback port. For what only
 * the app serves (/metrics) and for calls that must not pass the mesh.
 */
export async function appBases(shop) {
  if (shop.sidecars) {
    return shop.instances.map((instance) => ({
      instance: instance.id,
      app: instance.app,
      base: `unix:${shop.sidecars.sidecars.get(instance.id).appSocket}`,
    }));
  }
  // Bypassed, the endpoints mesh/local routes to are the apps themselves.
  const endpoints = JSON.parse(await get(shop.adminUrl, "endpoints"));
  return endpoints.map((e) => ({ instance: e.id, app: e.workload, base: `http://${e.inbound}` }));
}

/** Node, cores and how Postgres is reached: the line every benchmark's report starts with. */
export function machine() {
  const database = new URL(serverUrl).searchParams.get("host") ? "Unix socket" : "TCP";
  return `node ${process.version}, ${cpus().length} cores, Postgres over ${database}`;
}

const ticksToMs = 10; // USER_HZ is 100 on Linux

/** The CPU a process has used, in ms; 0 if it is gone. */
function cpuOf(pid) {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
    return (Number(fields[11]) + Number(fields[12])) * ticksToMs;
  } catch {
    return 0; // the process ended meanwhile
  }
}

/** The pids of all a shop's processes (for `others`: another shop idling meanwhile). */
export function pidsOf(shop) {
  return shop.processes.map((p) => p.pid()).filter(Boolean);
}

/** Each service's running processes (its instances: payment-0, payment-v2-0 …) by pid. */
function pidsByService(shop) {
  return workloadNames.map((app) => [
    app,
    shop
      .processesOf(app)
      .map((p) => p.pid())
      .filter(Boolean),
  ]);
}

/**
 * CPU time in ms: each service's processes together, this process (`mesh`: the ingress and
 * the sidecars, and the benchmark's bookkeeping), each of `others` (name → a pid or pids: the
 * load generator's) and the whole machine (`machine`).
 */
export function cpuSample(shop, others = {}) {
  const sample = {};
  for (const [app, pids] of pidsByService(shop))
    sample[app] = pids.reduce((sum, pid) => sum + cpuOf(pid), 0);
  const usage = process.cpuUsage();
  sample.mesh = (usage.user + usage.system) / 1000;
  for (const [name, pids] of Object.entries(others))
    sample[name] = [pids].flat().reduce((sum, pid) => sum + cpuOf(pid), 0);
  const [, ...total] = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/);
  const [user, nice, system, , , irq, softirq] = total.map(Number);
  sample.machine = (user + nice + system + irq + softirq) * ticksToMs;
  return sample;
}

/**
 * The CPU spent since `before` (a cpuSample): per process, `rest` (the rest of the machine:
 * Postgres mostly) and `total`.
 */
export function cpuSince(shop, before, others = {}) {
  const now = cpuSample(shop, others);
  const spent = Object.fromEntries(Object.keys(now).map((k) => [k, now[k] - (before[k] ?? 0)]));
  const { machine: all, ...processes } = spent;
  spent.rest = all - Object.values(processes).reduce((a, b) => a + b, 0);
  delete spent.machine;
  spent.total = all;
  return spent;
}

/**
 * Context switches of each service's main threads, this process's (`mesh`), each of
 * `others`' and all Postgres processes' together: each one is a wake-up, dear on a virtual
 * machine.
 */
export function switchesSample(shop, others = {}) {
  const switchesOf = (pid) => {
    try {
      const status = readFileSync(`/proc/${pid}/status`, "utf8");
      return [...status.matchAll(/^(?:non)?voluntary_ctxt_switches:\s+(\d+)$/gm)].reduce(
        (sum, [, n]) => sum + Number(n),
        0,
      );
    } catch {
      return 0; // the process ended meanwhile
    }
  };
  const sample = {};
  for (const [app, pids] of pidsByService(shop))
    sample[app] = pids.reduce((sum, pid) => sum + switchesOf(pid), 0);
  sample.mesh = switchesOf(process.pid);
  for (const [name, pids] of Object.entries(others))
    sample[name] = [pids].flat().reduce((sum, pid) => sum + switchesOf(pid), 0);
  sample.postgres = 0;
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/comm`, "utf8").trim() === "postgres")
        sample.postgres += switchesOf(entry);
    } catch {
      // gone meanwhile
    }
  }
  return sample;
}
