import { mkdirSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { connectPostgres } from "@thinmesh/platform";
import { prepareEmbeddedDatabases } from "./embedded.js";
import { issueWorkloadCertificate } from "./identity/index.js";
import { createIngress } from "./ingress.js";
import { loadMeshConfig } from "./mesh/index.js";
import { reservePort, reserveUnixSocket } from "./ports.js";
import { createAdmin, RecentRecords } from "./sidecar/admin.js";
import {
  EndpointRegistry,
  type Instance,
  ingressGateway,
  principalOf,
} from "./sidecar/instances.js";
import { type Sidecars, startSidecars } from "./sidecar/mesh.js";
import { createOutbound } from "./sidecar/outbound.js";
import { type AccessRecord, createTelemetry } from "./sidecar/telemetry.js";
import { type Supervised, type SupervisorEvents, supervise } from "./supervisor.js";
import { readWorkloads } from "./workloads.js";

/** The services of namespace shop (services/<name>), as in kustomize/base. */
export const workloadNames = ["auth", "catalog", "order", "payment"] as const;
export type WorkloadName = (typeof workloadNames)[number];

export interface LocalShopOptions {
  /** The repository root (mesh/istio, services/*, config/, kustomize/ are read from it). */
  root: string;
  /** The ingress gateway's port; 0 lets the operating system choose. */
  ingressPort: number;
  /** mesh/local's admin listener (Istio's metrics, endpoints, access records); 0: any port. */
  statsPort?: number;
  host?: string;
  /** The overlay whose Deployments run (kustomize/overlays/<overlay>); dev by default. */
  overlay?: string;
  /** The Istio resources to enforce; mesh/istio by default. */
  meshDir?: string;
  /**
   * For the benchmark that measures what the sidecars cost, and nothing else: the apps listen
   * on loopback ports and call each other directly, the ingress forwards in plaintext.
   */
  bypassSidecars?: boolean;
  /** A Postgres server URL: each service gets database `${databasePrefix}_${name}` on it. */
  databaseUrl?: string | undefined;
  databasePrefix?: string;
  /** Without databaseUrl: PGlite data directories go in `${dataDir}/${name}`. */
  dataDir: string;
  logLevel?: string;
  /** Extra environment per service (tests and demos: simulator settings, relay timing). */
  env?: Partial<Record<WorkloadName, Record<string, string>>>;
  events: SupervisorEvents;
  /** One access record per request at the ingress and at every sidecar. */
  onRecord(record: AccessRecord): void;
  /** A pushed mesh configuration took effect, or was refused. */
  onConfig?(event: { ok: true; files: string[] } | { ok: false; message: string }): void;
}

export interface LocalShop {
  ingressUrl: string;
  /** mesh/local's admin listener: /stats/prometheus, /endpoints, /access. */
  adminUrl: string;
  /** Each service's database on the Postgres server; undefined on the embedded PGlite. */
  databaseUrls: Record<WorkloadName, string> | undefined;
  /** The instances running, from the overlay's Deployments. */
  instances: Instance[];
  /** Instances of the overlay that are not running, and why. */
  notStarted: { instance: string; reason: string }[];
  /** One supervised process per running instance, named by the instance (payment-v2-0). */
  processes: Supervised[];
  /** The sidecars (undefined when bypassed): each instance's outbound URLs, certificates … */
  sidecars: Sidecars | undefined;
  /** Every Istio resource not enforced: none (an unimplemented field stops the start). */
  notEnforced: string[];
  /** The running processes of one service (its first instance first). */
  processesOf(app: WorkloadName): Supervised[];
  /**
   * The base URL at which `from` (a service: its first instance) reaches service `to`: its
   * outbound sidecar, so a call there goes through the mesh as `from`'s identity (bypassed:
   * the peer itself). Tests use it to call internal RPCs the way a workload does.
   */
  peerUrl(from: WorkloadName, to: WorkloadName): string;
  /** Why the first instance of a service is not ready, or undefined if it is. */
  readiness(app: WorkloadName): Promise<string | undefined>;
  /**
   * Resolves when every instance answers /readyz; rejects with a StartError naming the
   * instance and its last error once timeoutMs passes or an instance's configuration is invalid.
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

/** Drops the databases a shop with this prefix created on serverUrl (tests, benchmarks). */
export async function dropShopDatabases(serverUrl: string, prefix: string) {
  const admin = connectPostgres(serverUrl, { max: 1, onnotice: () => {} });
  try {
    for (const name of workloadNames) {
      await admin.unsafe(`drop database if exists "${prefix}_${name}" with (force)`);
    }
  } finally {
    await admin.end();
  }
}

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
 * Starts the whole shop on this machine: every instance the overlay declares as a supervised
 * process with its service's database, each behind its sidecars (mesh/local's stand-in for
 * Envoy, configured live from mesh/istio), and the ingress gateway on ingressPort. Every
 * listening socket is bound here before any process starts — the apps' Unix sockets and every
 * proxy port from the OS — so a port in use fails the start at once, and a restarting
 * instance keeps its socket.
 */
export async function startLocalShop(options: LocalShopOptions): Promise<LocalShop> {
  const host = options.host ?? "127.0.0.1";
  const meshDir = options.meshDir ?? join(options.root, "mesh/istio");
  const recent = new RecentRecords();
  const telemetry = createTelemetry({
    namespace: "shop",
    onRecord(record) {
      recent.add(record);
      options.onRecord(record);
    },
  });
  const specs = readWorkloads(options.root, options.overlay ?? "dev");
  const declared: Instance[] = specs.flatMap((spec) =>
    Array.from({ length: spec.replicas }, (_, n) => ({
      id: `${spec.deployment}-${n}`,
      app: spec.app,
      deployment: spec.deployment,
      version: spec.version,
      labels: spec.labels,
      namespace: spec.namespace,
      serviceAccount: spec.serviceAccount,
      principal: principalOf(spec.namespace, spec.serviceAccount),
    })),
  );
  const notStarted: LocalShop["notStarted"] = [];
  // PGlite allows one process per database: on the embedded default, a service runs one
  // instance (its first); the others need a real Postgres.
  const instances = declared.filter((instance) => {
    if (!(workloadNames as readonly string[]).includes(instance.app)) {
      notStarted.push({ instance: instance.id, reason: `no services/${instance.app} to run` });
      return false;
    }
    const first = declared.find((i) => i.app === instance.app);
    if (options.databaseUrl || first === instance) return true;
    notStarted.push({
      instance: instance.id,
      reason:
        "PGlite allows one process per database: run with DATABASE_URL to start every instance",
    });
    return false;
  });

  const releases: (() => void)[] = [];
  const socketDir = join(options.dataDir, "run");
  mkdirSync(socketDir, { recursive: true, mode: 0o700 });
  let sidecars: Sidecars | undefined;
  const endpoints = new EndpointRegistry();
  const listeners = new Map<
    string,
    { fd: number; probe: ProbeTarget; env: Record<string, string> }
  >();
  let config = () => loadMeshConfig(meshDir);
  try {
    if (options.bypassSidecars) {
      const mesh = loadMeshConfig(meshDir);
      config = () => mesh;
      const ports = new Map(instances.map((i) => [i.id, reservePort(host)]));
      for (const port of ports.values()) releases.push(port.release);
      const first = (app: string) => ports.get(instances.find((i) => i.app === app)!.id)!;
      const direct = (app: string) => `http://${host}:${first(app).port}`;
      for (const instance of instances) {
        const port = ports.get(instance.id)!;
        endpoints.set({ instance, host, port: port.port, ready: false });
        listeners.set(instance.id, {
          fd: port.fd,
          probe: { host, port: port.port },
          env: peerEnv((app) => direct(app)),
        });
      }
    } else {
      sidecars = await startSidecars({
        meshDir,
        caDir: join(options.dataDir, "mesh-ca"),
        socketDir,
        instances,
        telemetry,
        host,
        ...(options.onConfig ? { onConfig: options.onConfig } : {}),
      });
      config = sidecars.config;
      for (const instance of instances) {
        const sidecar = sidecars.sidecars.get(instance.id)!;
        const socket = reserveUnixSocket(sidecar.appSocket);
        releases.push(socket.release);
        listeners.set(instance.id, {
          fd: socket.fd,
          probe: { socketPath: sidecar.appSocket },
          env: peerEnv((app) => sidecar.outboundUrls[app]!),
        });
      }
    }
  } catch (error) {
    for (const release of releases) release();
    await sidecars?.close();
    throw error;
  }
  const registry = sidecars?.endpoints ?? endpoints;

  // The ingress gateway: its own identity, its outbound side, the Gateway's listener.
  const gatewayCertificate = sidecars
    ? await issueWorkloadCertificate(sidecars.ca, {
        spiffeId: `spiffe://${ingressGateway.principal}`,
      })
    : undefined;
  const gatewayOutbound = createOutbound({
    source: ingressGateway,
    config,
    endpoints: registry,
    certificate: () => gatewayCertificate!,
    telemetry,
    transport: sidecars ? "mtls" : "plaintext",
  });
  const ingress = createIngress({ config, outbound: gatewayOutbound });
  const admin = createAdmin({ telemetry, endpoints: registry, recent });
  const cleanUp = async () => {
    await ingress.close(0);
    await admin.close();
    gatewayOutbound.close();
    await sidecars?.close();
    for (const release of releases) release();
  };
  let address: AddressInfo;
  let adminAddress: AddressInfo;
  try {
    address = await ingress.listen(options.ingressPort, host).catch((error: unknown) => {
      throw new StartError(ingressPortProblem(options.ingressPort, host, error));
    });
    adminAddress = await admin.listen(options.statsPort ?? 15090, host).catch((error: unknown) => {
      throw new StartError(adminPortProblem(options.statsPort ?? 15090, host, error));
    });
  } catch (error) {
    await cleanUp();
    throw error;
  }
  const ingressUrl = `http://${host}:${address.port}`;

  let databaseUrls: Record<WorkloadName, string> | undefined;
  try {
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
    await cleanUp();
    throw error;
  }

  const configErrors = new Map<string, true>();
  const events: SupervisorEvents = {
    ...options.events,
    exited(name, code, signal) {
      if (code === exitConfigError) configErrors.set(name, true);
      registry.setReady(name, false);
      options.events.exited?.(name, code, signal);
    },
  };
  const processes = instances.map((instance) => {
    const name = instance.app as WorkloadName;
    const dataDir = join(options.dataDir, name);
    const listener = listeners.get(instance.id)!;
    return supervise(
      {
        name: instance.id,
        cwd: options.root,
        // THINMESH_NODE_ARGS passes flags to every workload's node (--cpu-prof, --inspect, …).
        args: [
          ...(process.env.THINMESH_NODE_ARGS?.split(/\s+/).filter(Boolean) ?? []),
          join(options.root, "services", name, "dist/main.js"),
        ],
        listenFd: listener.fd,
        env: {
          HOST: host,
          SERVICE_VERSION: instance.version,
          LOG_LEVEL: options.logLevel ?? "info",
          ...(databaseUrls
            ? { DATABASE_URL: databaseUrls[name]! }
            : { DATABASE_URL: "", PGLITE_DATA_DIR: dataDir }),
          ...listener.env,
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

  // The kubelet's readiness probe: an instance gets traffic only while /readyz answers 200.
  const lastProblem = new Map<string, string>();
  const probe = async (instance: Instance) => {
    const problem = await readinessProblem(listeners.get(instance.id)!.probe);
    if (problem === undefined) lastProblem.delete(instance.id);
    else lastProblem.set(instance.id, problem);
    registry.setReady(instance.id, problem === undefined);
    return problem;
  };
  const prober = setInterval(() => {
    for (const instance of instances) void probe(instance);
  }, 1_000);
  prober.unref();

  return {
    ingressUrl,
    adminUrl: `http://${host}:${adminAddress.port}`,
    databaseUrls,
    instances,
    notStarted,
    processes,
    sidecars,
    notEnforced: [],
    processesOf: (app) =>
      instances.flatMap((instance, i) => (instance.app === app ? [processes[i]!] : [])),
    peerUrl(from, to) {
      const instance = instances.find((i) => i.app === from)!;
      return listeners
        .get(instance.id)!
        .env[peerVariable[to]]!.replace(/\/\.well-known\/jwks\.json$/, "");
    },
    readiness: (app) => probe(instances.find((i) => i.app === app)!),
    async ready(timeoutMs = 60_000) {
      const deadline = Date.now() + timeoutMs;
      const waiting = new Map(instances.map((i) => [i.id, "not answering yet"]));
      for (;;) {
        await Promise.all(
          instances
            .filter((i) => waiting.has(i.id))
            .map(async (instance) => {
              const reason = await probe(instance);
              if (reason === undefined) waiting.delete(instance.id);
              else waiting.set(instance.id, reason);
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
      clearInterval(prober);
      await ingress.close(5_000);
      await Promise.all(processes.map((p) => p.stop()));
      await cleanUp();
    },
  };
}

const peerVariable: Record<WorkloadName, string> = {
  auth: "AUTH_JWKS_URL",
  catalog: "CATALOG_URL",
  order: "ORDER_URL",
  payment: "PAYMENT_URL",
};

/** Where an app's peer URLs point: its outbound sidecar, or (bypassed) the peer itself. */
function peerEnv(urlOf: (app: string) => string): Record<string, string> {
  // Services find their peers by base URL only; in a cluster these name Kubernetes Services.
  return {
    AUTH_JWKS_URL: `${urlOf("auth")}/.well-known/jwks.json`,
    CATALOG_URL: urlOf("catalog"),
    ORDER_URL: urlOf("order"),
    PAYMENT_URL: urlOf("payment"),
  };
}

type ProbeTarget = { host: string; port: number } | { socketPath: string };

/** Why an instance is not ready, or undefined when /readyz answers 200. */
function readinessProblem(target: ProbeTarget): Promise<string | undefined> {
  return new Promise((resolve) => {
    const request = http.get(
      { ...target, path: "/readyz", timeout: readyzTimeoutMs, agent: false },
      (response) => {
        let body = "";
        response.setEncoding("utf8");
        response.on("data", (chunk: string) => {
          body += chunk;
        });
        response.on("error", () => resolve("the answer broke off"));
        response.on("end", () => {
          if (response.statusCode === 200) return resolve(undefined);
          try {
            resolve(JSON.parse(body).reason ?? `status ${response.statusCode}`);
          } catch {
            resolve(`status ${response.statusCode}: ${body.slice(0, 200)}`);
          }
        });
      },
    );
    request.on("timeout", () => {
      request.destroy();
      resolve(`no answer within ${readyzTimeoutMs} ms`);
    });
    request.on("error", (error: NodeJS.ErrnoException) =>
      resolve(`not answering (${error.code ?? error.message})`),
    );
  });
}

function adminPortProblem(port: number, host: string, error: unknown): string {
  const code = (error as NodeJS.ErrnoException).code;
  const where = `mesh/local's admin port ${host}:${port} (THINMESH_ADMIN_PORT)`;
  if (code === "EADDRINUSE")
    return `${where} is in use by another program: stop it, or choose another port (THINMESH_ADMIN_PORT=0 lets the system pick one)`;
  return `cannot listen on ${where}: ${(error as Error).message}`;
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
