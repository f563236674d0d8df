// What the benchmarks share: the local shop on the real Postgres (each service on a database
// of its own, dropped at the end) and the CPU and context switches of its processes, from
// /proc (Linux).
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { connectPostgres } from "@thinmesh/platform";
import { startLocalShop, workloadNames } from "../mesh/local/dist/shop.js";

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
 * workload (files it names may go in dataDir, removed at the end). Returns the shop, each
 * workload's database URL and `close()`.
 */
export async function startBenchShop(name, env = () => ({})) {
  const prefix = `bench_${name}_${randomBytes(3).toString("hex")}`;
  const dataDir = mkdtempSync(join(tmpdir(), `thinmesh-bench-${name}-`));
  const shop = await startLocalShop({
    root,
    ingressPort: 0, // the operating system picks
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
    onHop: () => {},
  });
  const databaseUrls = Object.fromEntries(
    workloadNames.map((workload) => {
      const url = new URL(serverUrl);
      url.pathname = `/${prefix}_${workload}`;
      return [workload, url.toString()];
    }),
  );
  return {
    shop,
    databaseUrls,
    async close() {
      await shop.stop();
      rmSync(dataDir, { recursive: true, force: true });
      const sql = connectPostgres(serverUrl, { max: 1, onnotice: () => {} });
      for (const workload of workloadNames)
        await sql.unsafe(`drop database if exists "${prefix}_${workload}" with (force)`);
      await sql.end();
    },
  };
}

/** Node, cores and how Postgres is reached: the line every benchmark's report starts with. */
export function machine() {
  const database = new URL(serverUrl).searchParams.get("host") ? "Unix socket" : "TCP";
  return `node ${process.version}, ${cpus().length} cores, Postgres over ${database}`;
}

/**
 * CPU time in ms: each workload's process, this process (the client and the ingress), and the
 * whole machine (`machine`).
 */
export function cpuSample(shop) {
  const ticksToMs = 10; // USER_HZ is 100 on Linux
  const sample = {};
  for (const p of shop.processes) {
    const pid = p.pid();
    if (!pid) continue;
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
    sample[p.name] = (Number(fields[11]) + Number(fields[12])) * ticksToMs;
  }
  const usage = process.cpuUsage();
  sample["client+ingress"] = (usage.user + usage.system) / 1000;
  const [, ...total] = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/);
  const [user, nice, system, , , irq, softirq] = total.map(Number);
  sample.machine = (user + nice + system + irq + softirq) * ticksToMs;
  return sample;
}

/**
 * The CPU spent since `before` (a cpuSample): per process, `rest` (the rest of the machine:
 * Postgres mostly) and `total`.
 */
export function cpuSince(shop, before) {
  const now = cpuSample(shop);
  const spent = Object.fromEntries(Object.keys(now).map((k) => [k, now[k] - (before[k] ?? 0)]));
  const { machine: all, ...processes } = spent;
  spent.rest = all - Object.values(processes).reduce((a, b) => a + b, 0);
  delete spent.machine;
  spent.total = all;
  return spent;
}

/**
 * Context switches of each workload's main thread, this process's and all Postgres
 * processes' together: each one is a wake-up, dear on a virtual machine.
 */
export function switchesSample(shop) {
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
  for (const p of shop.processes) {
    const pid = p.pid();
    if (pid) sample[p.name] = switchesOf(pid);
  }
  sample["client+ingress"] = switchesOf(process.pid);
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
