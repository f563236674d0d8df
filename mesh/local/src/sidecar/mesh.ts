import { type FSWatcher, watch } from "node:fs";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { createDualProtocolServer, type DualProtocolServer } from "@thinmesh/platform";
import {
  createInboundListener,
  type InboundListener,
  issueWorkloadCertificate,
  loadOrCreateCa,
  type WorkloadCertificate,
} from "../identity/index.js";
import { MeshConfigError } from "../istio.js";
import { loadMeshConfig, type MeshConfig, mtlsModeFor, routeFor } from "../mesh/index.js";
import { workloadOf } from "../routing.js";
import { listenerLimits, readDownstream } from "./downstream.js";
import { createInbound } from "./inbound.js";
import {
  EndpointRegistry,
  type Instance,
  ingressGateway,
  PeerDirectory,
  peerWorkloadOf,
} from "./instances.js";
import { createOutbound, type Outbound, type Source } from "./outbound.js";
import { type Telemetry, traceHop } from "./telemetry.js";

export interface SidecarsOptions {
  /** mesh/istio (or a test's own directory of Istio resources). */
  meshDir: string;
  /** Where the local CA lives (created on first start). */
  caDir: string;
  /** Directory of the apps' Unix sockets. */
  socketDir: string;
  instances: Instance[];
  telemetry: Telemetry;
  host?: string;
  /** A pushed configuration took effect, or was refused (the last good one stays). */
  onConfig?(event: { ok: true; files: string[] } | { ok: false; message: string }): void;
}

/** One workload instance's proxy: its inbound listener and an outbound listener per service. */
export interface Sidecar {
  instance: Instance;
  appSocket: string;
  inboundPort: number;
  /** The base URL the app calls for each peer service (its peer configuration). */
  outboundUrls: Record<string, string>;
  certificate(): WorkloadCertificate;
}

export interface Sidecars {
  sidecars: Map<string, Sidecar>;
  endpoints: EndpointRegistry;
  config(): MeshConfig;
  /** The ingress gateway's outbound side (it routes by the Gateway's VirtualServices). */
  gatewayOutbound(certificate: WorkloadCertificate): Outbound;
  ca: Awaited<ReturnType<typeof loadOrCreateCa>>;
  close(): Promise<void>;
}

/**
 * Starts the sidecars of every instance (inbound + outbound listeners, certificates from the
 * local CA) and keeps the mesh configuration current: an edit of a file in meshDir is loaded
 * and pushed within a fraction of a second, as istiod would; one that does not validate is
 * refused and the last good configuration stays in force.
 */
export async function startSidecars(options: SidecarsOptions): Promise<Sidecars> {
  const host = options.host ?? "127.0.0.1";
  let current = loadMeshConfig(options.meshDir);
  const config = () => current;
  const ca = await loadOrCreateCa(options.caDir);
  const endpoints = new EndpointRegistry();
  const services = [...new Set(options.instances.map((i) => i.app))];
  const sidecars = new Map<string, Sidecar>();
  const listeners: (InboundListener | DualProtocolServer)[] = [];
  const closers: (() => void)[] = [];
  const peers = new PeerDirectory();

  const outboundFor = (source: Source, certificate: () => WorkloadCertificate) => {
    const outbound = createOutbound({
      source,
      config,
      endpoints,
      certificate,
      telemetry: options.telemetry,
    });
    closers.push(outbound.close);
    return outbound;
  };

  /** A plaintext listener on loopback where an app calls one service (Istio's outbound listener). */
  async function outboundListener(outbound: Outbound, service: string) {
    const server = createDualProtocolServer(async (req, res) => {
      const request = await readDownstream(req, res, listenerLimits, (refusal) =>
        outbound.record(refusal.request, refusal.fields),
      );
      if (!request) return;
      const current = config();
      // This proxy's span; an app's call without a trace (its own work) starts one here.
      traceHop(request, current.tracing.samplingPercentage);
      const route = routeFor(current, service, {
        path: request.path,
        method: request.method,
        header: (name) => {
          const value = request.headers[name];
          return Array.isArray(value) ? value.join(",") : value;
        },
      });
      if (!route) {
        return outbound.reply(request, 404, "", {
          response_flags: "NR",
          response_code_details: "route_not_found",
        });
      }
      await outbound.forward(request, route);
    }, listenerLimits);
    const address = await server.listen(0, host);
    listeners.push(server);
    return `http://${host}:${address.port}`;
  }

  for (const instance of options.instances) {
    let certificate = await issueWorkloadCertificate(ca, {
      spiffeId: `spiffe://${instance.principal}`,
    });
    const appSocket = join(options.socketDir, `${instance.id}.sock`);
    const workload = peerWorkloadOf(instance);
    peers.add(certificate.certPem, workload);
    const outbound = outboundFor(workload, () => certificate);
    const outboundUrls: Record<string, string> = {};
    for (const service of services)
      outboundUrls[service] = await outboundListener(outbound, service);

    const inbound = createInbound({
      instance,
      appSocket,
      config,
      endpoints,
      telemetry: options.telemetry,
      peers,
      // The sidecar fetches the JWKS itself, through its own outbound side (mTLS, as this
      // workload): Istio's PILOT_JWT_ENABLE_REMOTE_JWKS=envoy, which mesh/istio/install sets.
      async fetchJwks(uri) {
        const url = new URL(uri);
        const service = workloadOf(url.hostname, instance.namespace);
        const base = service && outboundUrls[service];
        if (!base) throw new Error(`${uri}: not a service of namespace ${instance.namespace}`);
        return fetchJwksFrom(`${base}${url.pathname}${url.search}`);
      },
    });
    closers.push(inbound.close);
    const listener = createInboundListener({
      mode: () => mtlsModeFor(config(), instance),
      certificate: () => certificate,
      handler: (req, res, peer) => void inbound.handle(req, res, peer),
    });
    const address: AddressInfo = await listener.listen(0, host);
    listeners.push(listener);
    endpoints.set({ instance, host, port: address.port, ready: false });
    sidecars.set(instance.id, {
      instance,
      appSocket,
      inboundPort: address.port,
      outboundUrls,
      certificate: () => certificate,
    });
    // Keep the workload's certificate fresh well before it expires (Istio rotates at ~half life).
    const renew = setInterval(
      async () => {
        certificate = await issueWorkloadCertificate(ca, {
          spiffeId: `spiffe://${instance.principal}`,
        });
        peers.add(certificate.certPem, workload);
      },
      6 * 60 * 60 * 1000,
    );
    renew.unref();
    closers.push(() => clearInterval(renew));
  }

  // Live configuration, as istiod pushes it: reload on any change in the directory.
  let watcher: FSWatcher | undefined;
  let debounce: NodeJS.Timeout | undefined;
  try {
    watcher = watch(options.meshDir, () => {
      clearTimeout(debounce);
      debounce = setTimeout(() => {
        try {
          current = loadMeshConfig(options.meshDir);
          options.onConfig?.({ ok: true, files: current.files });
        } catch (error) {
          const message =
            error instanceof MeshConfigError
              ? error.message
              : `cannot load ${options.meshDir}: ${(error as Error).message}`;
          options.onConfig?.({ ok: false, message });
        }
      }, 100);
    });
  } catch {
    watcher = undefined;
  }

  return {
    sidecars,
    endpoints,
    config,
    ca,
    gatewayOutbound(certificate) {
      return outboundFor(ingressGateway, () => certificate);
    },
    async close() {
      watcher?.close();
      clearTimeout(debounce);
      for (const close of closers) close();
      await Promise.all(listeners.map((l) => l.close(1_000)));
    },
  };
}

/** Istio's RemoteJwks HttpUri timeout when a jwtRule sets none (mesh/local refuses `timeout`). */
export const JWKS_FETCH_TIMEOUT_MS = 5_000;

/**
 * A JWKS over HTTP within the timeout (the body included); a hung issuer is then Envoy's
 * "Jwks remote fetch is failed" instead of holding every token check.
 */
export async function fetchJwksFrom(url: string, timeoutMs = JWKS_FETCH_TIMEOUT_MS) {
  const response = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  if (!response.ok) throw new Error(`${url}: ${response.status}`);
  return (await response.json()) as unknown;
}
