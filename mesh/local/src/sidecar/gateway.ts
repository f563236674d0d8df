import type { AddressInfo } from "node:net";
import { createDualProtocolServer } from "@thinmesh/platform";
import type { WorkloadCertificate } from "../identity/index.js";
import { LocalRateLimiter, type MeshConfig, type MeshRoute, retryPolicy } from "../mesh/index.js";
import { chooseRoute, workloadOf } from "../routing.js";
import { headerOf, readDownstream } from "./downstream.js";
import type { Outbound } from "./outbound.js";

export interface GatewayOptions {
  config(): MeshConfig;
  outbound: Outbound;
  certificate(): WorkloadCertificate;
}

/**
 * The ingress gateway: the Gateway's listener and the VirtualServices bound to it, with the
 * EnvoyFilter local rate limits applied before routing (as the filter sits before the router),
 * then the gateway's own outbound side (mTLS as the ingress gateway's identity, Istio's default
 * retry policy unless a route sets one).
 */
export function createGateway(options: GatewayOptions) {
  const limiters = new Map<string, LocalRateLimiter>();
  let limitersOf: MeshConfig | undefined;
  const rateLimiters = (config: MeshConfig) => {
    // A pushed configuration replaces the buckets (Envoy rebuilds the filter chain too).
    if (limitersOf !== config) {
      limiters.clear();
      for (const limit of config.rateLimits) limiters.set(limit.name, new LocalRateLimiter(limit));
      limitersOf = config;
    }
    return [...limiters.values()];
  };

  const server = createDualProtocolServer(async (req, res) => {
    const { outbound } = options;
    const request = await readDownstream(req, res, (status, details) =>
      outbound.record(
        {
          req,
          res,
          method: req.method ?? "",
          path: req.url ?? "",
          headers: {},
          body: Buffer.alloc(0),
          startedAt: performance.now(),
          startTime: new Date().toISOString(),
          requestId: String(req.headers["x-request-id"] ?? ""),
        },
        { response_code: status, response_flags: status ? "-" : "DC", response_code_details: details },
      ),
    );
    if (!request) return;
    const config = options.config();
    const { headers } = request;
    const remote = req.socket?.remoteAddress ?? "";
    headers["x-forwarded-for"] = headers["x-forwarded-for"] ? `${headerOf(headers, "x-forwarded-for")}, ${remote}` : remote;
    headers["x-forwarded-proto"] = "http";
    const path = request.path.split("?")[0] ?? "/";
    const header = (name: string) => headerOf(headers, name);

    for (const limiter of rateLimiters(config)) {
      const verdict = limiter.check({ path, clientAddress: remote, header });
      if (verdict.limited) {
        return outbound.reply(request, verdict.status, verdict.body, { response_flags: "RL", response_code_details: "local_rate_limited" }, verdict.headers);
      }
    }
    const choice = chooseRoute(config.ingressRoutes, { path, method: request.method, header });
    if (!choice) {
      return outbound.reply(request, 404, "", { response_flags: "NR", response_code_details: "route_not_found" });
    }
    const host = workloadOf(choice.host, config.namespace);
    if (!host) {
      return outbound.reply(request, 503, "no healthy upstream", { response_flags: "UH", response_code_details: "cluster_not_found" });
    }
    const destination = choice.route.route.find((r) => r.destination.host === choice.host)?.destination;
    const route: MeshRoute = {
      ...(choice.route.name ? { name: choice.route.name } : {}),
      destination: {
        host,
        ...(destination && "subset" in destination && destination.subset ? { subset: destination.subset as string } : {}),
        ...(destination?.port ? { port: destination.port.number } : {}),
      },
      retry: retryPolicy(undefined),
    };
    await outbound.forward(request, route);
  });

  return {
    listen: (port: number, host: string): Promise<AddressInfo> => server.listen(port, host),
    close: (graceMs: number) => server.close(graceMs),
  };
}
