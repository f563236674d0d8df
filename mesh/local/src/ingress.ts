import { createDualProtocolServer, type DualProtocolServer } from "@thinmesh/platform";
import { authorityOf } from "./forward.js";
import {
  durationMs,
  type HttpRoute,
  type LocalRateLimit,
  LocalRateLimiter,
  MESH_TRACE_SAMPLING_PERCENT,
  type MeshRoute,
  matchesRoute,
  pickDestination,
  retryPolicy,
  workloadOf,
} from "./mesh/index.js";
import {
  headerOf,
  type ListenerLimits,
  listenerLimits,
  type ProxiedRequest,
  readDownstream,
} from "./sidecar/downstream.js";
import type { Outbound } from "./sidecar/outbound.js";
import { traceHop } from "./sidecar/telemetry.js";

/** What the ingress gateway routes by: the Gateway's VirtualServices and its rate limits. */
export interface IngressConfig {
  namespace: string;
  ingressRoutes: HttpRoute[];
  rateLimits: LocalRateLimit[];
}

export interface IngressOptions extends Partial<ListenerLimits> {
  /** Read for every request, so that a pushed configuration applies to the next one. */
  config(): IngressConfig;
  /** The gateway's outbound side: endpoints, pools, retries, mTLS as the gateway's identity. */
  outbound: Outbound;
}

/**
 * A local stand-in for the Istio ingress gateway: the Gateway's HTTP listener (bounded headers,
 * bodies and idle time; no client can crash or exhaust it), the path normalised once, the
 * EnvoyFilter local rate limits (the filter sits before the router), then the VirtualServices
 * bound to the Gateway — with Istio's default retry policy unless a route sets its own — and
 * the gateway's outbound side.
 */
export function createIngress(options: IngressOptions): DualProtocolServer {
  const limits = { ...listenerLimits, ...options };
  const { outbound } = options;
  const limiters = new Map<LocalRateLimit, LocalRateLimiter>();
  // A pushed configuration brings new buckets, as Envoy rebuilds the filter chain.
  const limitersOf = (config: IngressConfig) => {
    for (const limit of limiters.keys())
      if (!config.rateLimits.includes(limit)) limiters.delete(limit);
    return config.rateLimits.map((limit) => {
      const limiter = limiters.get(limit) ?? new LocalRateLimiter(limit);
      limiters.set(limit, limiter);
      return limiter;
    });
  };

  async function route(request: ProxiedRequest) {
    const config = options.config();
    const { headers, req } = request;
    const remote = req.socket?.remoteAddress ?? "";
    headers["x-forwarded-proto"] = "http";
    // The gateway is in istio-system: no Telemetry of namespace shop applies to it, the
    // mesh's default sampling does. It starts the trace of a client that sent none.
    traceHop(request, MESH_TRACE_SAMPLING_PERCENT);
    headers["x-forwarded-for"] = headers["x-forwarded-for"]
      ? `${headerOf(headers, "x-forwarded-for")}, ${remote}`
      : remote;
    const header = (name: string) => headerOf(headers, name);

    const facts = { path: request.path, method: request.method, header };
    const route = config.ingressRoutes.find((candidate) => matchesRoute(candidate, facts));
    // The local rate limit filter runs before the router, with the route's descriptors.
    for (const limiter of limitersOf(config)) {
      const verdict = limiter.check({
        route: route?.name,
        path: request.path,
        method: request.method,
        // The authority as the client sent it: the forwarded headers no longer hold it.
        authority: authorityOf(req),
        clientAddress: remote,
        header,
      });
      if (verdict.limited) {
        return outbound.reply(
          request,
          verdict.status,
          verdict.body,
          {
            route_name: route?.name ?? null,
            response_flags: "RL",
            response_code_details: "local_rate_limited",
          },
          verdict.headers,
        );
      }
    }
    if (!route) {
      return outbound.reply(request, 404, "", {
        response_flags: "NR",
        response_code_details: "route_not_found",
      });
    }
    const { destination } = pickDestination(route, Math.random);
    const host = workloadOf(destination.host, config.namespace);
    if (!host) {
      return outbound.reply(request, 503, "no healthy upstream", {
        route_name: route.name ?? null,
        response_flags: "UH",
        response_code_details: "cluster_not_found",
      });
    }
    const meshRoute: MeshRoute = {
      ...(route.name ? { name: route.name } : {}),
      destination: {
        host,
        ...(destination.subset ? { subset: destination.subset } : {}),
        ...(destination.port ? { port: destination.port.number } : {}),
      },
      ...(route.timeout ? { timeoutMs: durationMs(route.timeout) } : {}),
      retry: retryPolicy(route.retries),
      ...(route.fault ? { fault: route.fault } : {}),
    };
    await outbound.forward(request, meshRoute);
  }

  return createDualProtocolServer(
    async (req, res) => {
      const request = await readDownstream(req, res, limits, (refusal) =>
        outbound.record(refusal.request, refusal.fields),
      );
      if (!request) return;
      try {
        await route(request);
      } catch (error) {
        // A bug here must not end the process that fronts the whole shop.
        outbound.reply(request, 500, "", {
          response_flags: "-",
          response_code_details: `ingress_error{${(error as Error)?.message ?? String(error)}}`,
        });
      }
    },
    { headersTimeoutMs: limits.headersTimeoutMs, idleTimeoutMs: limits.idleTimeoutMs },
  );
}
