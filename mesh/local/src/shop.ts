import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { connectPostgres } from "@thinmesh/platform";
import { prepareEmbeddedDatabases } from "./embedded.js";
import { createIngress, type Hop } from "./ingress.js";
import { loadIngress } from "./istio.js";
import { type ReservedPort, reservePort } from "./ports.js";
import { type Supervised, type SupervisorEvents, supervise } from "./supervisor.js";

/** The workloads of namespace shop, as in kustomize/base. */
export const workloadNames = ["auth", "catalog", "order", "payment"] as const;
export type WorkloadName = (typeof workloadNames)[number];

export interface LocalShopOptions {
  /** The repository root (mesh/istio, services/*, config/ are read from it). */
  root: string;
  /** The ingress gateway's port; 0 lets the operating system choose. */
  ingressPort: number;
  host?: string;
  /** A Postgres server URL: each workload gets database `${databasePrefix}_${name}` on it. */
  databaseUrl?: string | undefined;
  databasePrefix?: string;
  /** Without databaseUrl: PGlite data directories go in `${dataDir}/${name}`. */
  dataDir: string;
  logLevel?: string;
  /** Extra environment per workload (tests and demos: simulator settings, relay timing). */
  env?: Partial<Record<WorkloadName, Record<string, string>>>;
  events: SupervisorEvents;
  onHop(hop: Hop): void;
}

export interface LocalShop {
  ingressUrl: string;
  /** Direct URL of each workload (bypassing the ingress); the ports come from the OS. */
  workloadUrls: Record<WorkloadName, string>;
  processes: Supervised[];
  /** Every ingress resource not enforced by this step of mesh/local. */
  notEnforced: string[];
  /**
   * Resolves when every workload answers /readyz; rejects with a StartError naming the
   * workload and its last error once timeoutMs passes or a workload's configuration is invalid.
   */
  ready(timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

/** The shop cannot start; the message names the cause (a port, a workload and its error). */
export class StartError extends Error {
  override name = "StartError";
}

// A service exits with this (EX_CONFIG) when its environment is invalid: restarting cannot help.
const exitConfigError = 78;
// One /readyz answer may take this long; a port held by something that never answers must
// not stall the whole wait.
const readyzTimeoutMs = 2_000;

// Dev-only credentials of the provisioned administrator; never use them outside a laptop.
export const devAdmin = { email: "admin@thinmesh.local", password: "dev-only-admin-password" };

async function ensureDatabases(serverUrl: string, prefix: string) {
  const admin = connectPostgres(serverUrl, { max: 1, onnotice: () => {} });
  const urls = {} as Record<WorkloadName, string>;
  try {
    for (const name of workloadNames) {
      const database = `${prefix}_${name}`;
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

/**
 * Starts the whole shop on this machine: the ingress gateway on ingressPort routing by
 * mesh/istio, and each workload as a supervised process with its own database. Every port is
 * bound here before any workload starts (a workload's port by the OS, handed to it as a bound
 * socket), so a port in use fails the start at once, and a restarting workload keeps its port.
 */
export async function startLocalShop(options: LocalShopOptions): Promise<LocalShop> {
  const host = options.host ?? "127.0.0.1";
  const ingressConfig = loadIngress(join(options.root, "mesh/istio"));
  const ports = new Map<WorkloadName, ReservedPort>();
  const workloadUrls = {} as Record<WorkloadName, string>;
  const ingress = createIngress({
    config: ingressConfig,
    upstream: (workload) => workloadUrls[workload as WorkloadName],
    onHop: options.onHop,
  });
  let address: AddressInfo;
  try {
    address = await ingress.listen(options.ingressPort, host);
  } catch (error) {
    throw new StartError(ingressPortProblem(options.ingressPort, host, error));
  }
  const ingressUrl = `http://${host}:${address.port}`;

  let databaseUrls: Record<WorkloadName, string> | undefined;
  try {
    for (const name of workloadNames) {
      const port = reservePort(host);
      ports.set(name, port);
      workloadUrls[name] = `http://${host}:${port.port}`;
    }
    databaseUrls = options.databaseUrl
      ? await ensureDatabases(options.databaseUrl, options.databasePrefix ?? "thinmesh").catch(
          (error: Error) => {
            throw new StartError(
              `cannot prepare the services' databases on ${redactUrl(options.databaseUrl!)} (DATABASE_URL): ${error.message}`,
            );
          },
        )
      : undefined;
    if (!databaseUrls) {
      const created = await prepareEmbeddedDatabases(options.dataDir, workloadNames, (message) =>
        options.events.event("mesh", message, {}),
      ).catch((error: Error) => {
        throw new StartError(error.message);
      });
      if (created.length)
        options.events.event("mesh", "embedded databases created", { workloads: created });
    }
  } catch (error) {
    for (const port of ports.values()) port.release();
    await ingress.close(0);
    throw error;
  }

  // Services find their peers by base URL only; in a cluster these name Kubernetes Services.
  const peers = {
    AUTH_JWKS_URL: `${workloadUrls.auth}/.well-known/jwks.json`,
    CATALOG_URL: workloadUrls.catalog,
    ORDER_URL: workloadUrls.order,
    PAYMENT_URL: workloadUrls.payment,
  };
  const configErrors = new Map<string, true>();
  const events: SupervisorEvents = {
    ...options.events,
    exited(name, code, signal) {
      if (code === exitConfigError) configErrors.set(name, true);
      options.events.exited?.(name, code, signal);
    },
  };
  const processes = workloadNames.map((name) => {
    const dataDir = join(options.dataDir, name);
    const port = ports.get(name)!;
    return supervise(
      {
        name,
        cwd: options.root,
        // THINMESH_NODE_ARGS passes flags to every workload's node (--cpu-prof, --inspect, …).
        args: [
          ...(process.env.THINMESH_NODE_ARGS?.split(/\s+/).filter(Boolean) ?? []),
          join(options.root, "services", name, "dist/main.js"),
        ],
        listenFd: port.fd,
        env: {
          // Informational: the service listens on the socket it inherits (LISTEN_FD).
          PORT: String(port.port),
          HOST: host,
          SERVICE_VERSION: "v1",
          LOG_LEVEL: options.logLevel ?? "info",
          ...(databaseUrls
            ? { DATABASE_URL: databaseUrls[name] }
            : { DATABASE_URL: "", PGLITE_DATA_DIR: dataDir }),
          ...peers,
          ...(name === "auth"
            ? {
                ADMIN_EMAIL: devAdmin.email,
                ADMIN_PASSWORD: devAdmin.password,
                PUBLIC_URL: ingressUrl,
              }
            : {}),
          ...(name === "catalog" ? { SEED_PRODUCTS: "true" } : {}),
          ...options.env?.[name],
        },
      },
      events,
    );
  });

  return {
    ingressUrl,
    workloadUrls,
    processes,
    notEnforced: ingressConfig.notEnforced,
    async ready(timeoutMs = 60_000) {
      const deadline = Date.now() + timeoutMs;
      const waiting = new Map(processes.map((p) => [p.name, "not answering yet"]));
      for (;;) {
        await Promise.all(
          [...waiting.keys()].map(async (name) => {
            const reason = await readinessProblem(workloadUrls[name as WorkloadName]);
            if (reason === undefined) waiting.delete(name);
            else waiting.set(name, reason);
          }),
        );
        if (waiting.size === 0) return;
        for (const process of processes) {
          if (waiting.has(process.name) && configErrors.has(process.name)) {
            throw new StartError(
              `${process.name} cannot start: its configuration is invalid: ${process.lastProblem() ?? "(no error line)"}`,
            );
          }
        }
        if (Date.now() > deadline) {
          const [name, reason] = [...waiting][0]!;
          const process = processes.find((p) => p.name === name)!;
          throw new StartError(
            `${name} did not become ready within ${timeoutMs / 1000} s (/readyz: ${reason}); its last error: ${process.lastProblem() ?? "none logged"}`,
          );
        }
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    },
    async stop() {
      await ingress.close(5_000);
      await Promise.all(processes.map((p) => p.stop()));
      for (const port of ports.values()) port.release();
    },
  };
}

/** Why a workload is not ready, or undefined when /readyz answers 200. */
async function readinessProblem(baseUrl: string): Promise<string | undefined> {
  try {
    const response = await fetch(`${baseUrl}/readyz`, {
      signal: AbortSignal.timeout(readyzTimeoutMs),
    });
    if (response.ok) return undefined;
    const body = await response.text();
    try {
      return JSON.parse(body).reason ?? `status ${response.status}`;
    } catch {
      return `status ${response.status}: ${body.slice(0, 200)}`;
    }
  } catch (error) {
    const cause = (error as Error & { cause?: { code?: string } }).cause?.code;
    return (error as Error).name === "TimeoutError"
      ? `no answer within ${readyzTimeoutMs} ms`
      : `not answering (${cause ?? (error as Error).message})`;
  }
}

function ingressPortProblem(port: number, host: string, error: unknown): string {
  const code = (error as NodeJS.ErrnoException).code;
  const where = `the ingress port ${host}:${port} (THINMESH_INGRESS_PORT)`;
  if (code === "EADDRINUSE")
    return `${where} is in use by another program: stop it, or choose another port (THINMESH_INGRESS_PORT=0 lets the system pick one)`;
  if (code === "EACCES")
    return `${where} needs privileges to bind: choose a port above 1023 with THINMESH_INGRESS_PORT`;
  return `cannot listen on ${where}: ${(error as Error).message}`;
}

const redactUrl = (url: string) => url.replace(/\/\/([^:/@]+):[^@]*@/, "//$1:[redacted]@");
