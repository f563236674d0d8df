import { createIngress, type IngressOptions } from "../src/ingress.js";
import type { HttpRoute, MeshConfig } from "../src/mesh/index.js";
import { EndpointRegistry, ingressGateway, principalOf } from "../src/sidecar/instances.js";
import { createOutbound } from "../src/sidecar/outbound.js";
import { type AccessRecord, createTelemetry } from "../src/sidecar/telemetry.js";

/**
 * The ingress gateway in front of plain test servers: routes as given, each upstream base URL
 * registered as the one endpoint of its service, and the gateway's outbound side speaking
 * plaintext h2c to them (no sidecars: the tests of the listener and routing need none).
 */
export function testIngress(options: {
  routes: HttpRoute[];
  upstreams: Record<string, string>;
  onRecord(record: AccessRecord): void;
  limits?: Partial<Omit<IngressOptions, "config" | "outbound">>;
  rateLimits?: MeshConfig["rateLimits"];
}) {
  const endpoints = new EndpointRegistry();
  for (const [app, base] of Object.entries(options.upstreams)) {
    const url = new URL(base);
    endpoints.set({
      instance: {
        id: `${app}-0`,
        app,
        deployment: app,
        version: "v1",
        labels: { app, version: "v1" },
        namespace: "shop",
        serviceAccount: app,
        principal: principalOf("shop", app),
      },
      host: url.hostname,
      port: Number(url.port),
      ready: true,
    });
  }
  const config = {
    namespace: "shop",
    ingressRoutes: options.routes,
    virtualServices: [],
    destinationRules: [],
    peerAuthentications: [],
    authorizationPolicies: [],
    requestAuthentications: [],
    rateLimits: options.rateLimits ?? [],
  } as unknown as MeshConfig;
  const outbound = createOutbound({
    source: ingressGateway,
    config: () => config,
    endpoints,
    certificate: () => {
      throw new Error("plaintext: no certificate");
    },
    telemetry: createTelemetry({ namespace: "shop", onRecord: options.onRecord }),
    transport: "plaintext",
  });
  return createIngress({ config: () => config, outbound, ...options.limits });
}
