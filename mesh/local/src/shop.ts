import { mkdirSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { connectPostgres } from "@thinmesh/platform";
import { createIngress, type Hop } from "./ingress.js";
import { loadIngress } from "./istio.js";
import { type Supervised, type SupervisorEvents, supervise } from "./supervisor.js";

/** The workloads of namespace shop, as in kustomize/base. */
export const workloadNames = ["auth", "catalog", "order", "payment"] as const;
export type WorkloadName = (typeof workloadNames)[number];

export interface LocalShopOptions {
  /** The repository root (mesh/istio, services/*, config/ are read from it). */
  root: string;
  ingressPort: number;
  /** Each workload listens on basePort + its index (auth, catalog, order, payment). */
  basePort: number;
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
  /** Direct URL of each workload (bypassing the ingress). */
  workloadUrls: Record<WorkloadName, string>;
  processes: Supervised[];
  /** Every ingress resource not enforced by this step of mesh/local. */
  notEnforced: string[];
  /** Resolves when every workload answers /readyz. */
  ready(timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

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
 * Starts the whole shop on this machine: each workload as a supervised process with its own
 * database, and the ingress gateway on ingressPort routing by mesh/istio.
 */
export async function startLocalShop(options: LocalShopOptions): Promise<LocalShop> {
  const host = options.host ?? "127.0.0.1";
  const ingressConfig = loadIngress(join(options.root, "mesh/istio"));
  const workloadUrls = Object.fromEntries(
    workloadNames.map((name, i) => [name, `http://${host}:${options.basePort + i}`]),
  ) as Record<WorkloadName, string>;
  const databaseUrls = options.databaseUrl
    ? await ensureDatabases(options.databaseUrl, options.databasePrefix ?? "thinmesh")
    : undefined;
  const ingressUrl = `http://${host}:${options.ingressPort}`;

  // Services find their peers by base URL only; in a cluster these name Kubernetes Services.
  const peers = {
    AUTH_JWKS_URL: `${workloadUrls.auth}/.well-known/jwks.json`,
    CATALOG_URL: workloadUrls.catalog,
    ORDER_URL: workloadUrls.order,
    PAYMENT_URL: workloadUrls.payment,
  };
  const processes = workloadNames.map((name, i) => {
    const dataDir = join(options.dataDir, name);
    if (!databaseUrls) mkdirSync(dataDir, { recursive: true });
    return supervise(
      {
        name,
        cwd: options.root,
        // THINMESH_NODE_ARGS passes flags to every workload's node (--cpu-prof, --inspect, …).
        args: [
          ...(process.env.THINMESH_NODE_ARGS?.split(/\s+/).filter(Boolean) ?? []),
          join(options.root, "services", name, "dist/main.js"),
        ],
        env: {
          PORT: String(options.basePort + i),
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
      options.events,
    );
  });

  const ingress = createIngress({
    config: ingressConfig,
    upstream: (workload) => workloadUrls[workload as WorkloadName],
    onHop: options.onHop,
  });
  let address: AddressInfo;
  try {
    address = await ingress.listen(options.ingressPort, host);
  } catch (error) {
    await Promise.all(processes.map((p) => p.stop()));
    throw error;
  }

  return {
    ingressUrl: `http://${host}:${address.port}`,
    workloadUrls,
    processes,
    notEnforced: ingressConfig.notEnforced,
    async ready(timeoutMs = 60_000) {
      const deadline = Date.now() + timeoutMs;
      for (const name of workloadNames) {
        for (;;) {
          const ok = await fetch(`${workloadUrls[name]}/readyz`).then(
            (r) => r.ok,
            () => false,
          );
          if (ok) break;
          if (Date.now() > deadline)
            throw new Error(`${name} did not become ready within ${timeoutMs / 1000} s`);
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      }
    },
    async stop() {
      await ingress.close(5_000);
      await Promise.all(processes.map((p) => p.stop()));
    },
  };
}
