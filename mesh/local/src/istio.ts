/**
 * The ingress's view of mesh/istio: the Gateway and the routes bound to it. The parsing lives in
 * mesh/config.ts (every kind mesh/local implements); this module keeps the ingress's API.
 */
import { type HttpRoute, loadMeshConfig, MeshConfigError, readResources } from "./mesh/config.js";

export type { Gateway, HttpRoute, StringMatch, VirtualService } from "./mesh/config.js";
export { MeshConfigError, readResources };

export interface IngressConfig {
  gateway: import("./mesh/config.js").Gateway;
  /** The gateway's VirtualServices' routes, in the order Istio evaluates them. */
  routes: HttpRoute[];
  /**
   * Resources validated (mesh/config.ts) but enforced by no proxy (kind/name): none since the
   * sidecars enforce every resource; an unimplemented field is refused at load instead.
   */
  notEnforced: string[];
}

/** The Gateway (there must be exactly one) and the VirtualServices bound to it. */
export function loadIngress(dir: string, resources = readResources(dir)): IngressConfig {
  const config = loadMeshConfig(dir, resources);
  const atIngress = (r: (typeof resources)[number]) =>
    r.kind === "Gateway" ||
    (r.kind === "VirtualService" &&
      Array.isArray(r.spec?.gateways) &&
      r.spec.gateways.some((g) => g !== "mesh"));
  const notEnforced = resources
    .filter((r) => !atIngress(r))
    .map((r) => `${String(r.kind)}/${String(r.metadata?.name)}`);
  return { gateway: config.gateway, routes: config.ingressRoutes, notEnforced };
}
