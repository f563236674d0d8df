/**
 * mesh/local's policy engine: mesh/istio read strictly (config.ts) and evaluated with Istio's and
 * Envoy's semantics, pure (no sockets, no Node http types) so the sidecars and the ingress call
 * it and the tests exercise it directly. Each module's header says what of Istio it implements
 * and where it deliberately differs.
 */
export * from "./authz.js";
export * from "./config.js";
export * from "./connection-pool.js";
export * from "./destinations.js";
export * from "./duration.js";
export * from "./faults.js";
export * from "./jwt.js";
export * from "./load-balancer.js";
export * from "./match.js";
export * from "./outlier.js";
export * from "./peer-authentication.js";
export * from "./rate-limit.js";
export * from "./retry.js";
export * from "./routes.js";
