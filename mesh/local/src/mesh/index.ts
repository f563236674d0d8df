// mesh/local's policy engine: mesh/istio parsed strictly and evaluated as Istio and Envoy do.
export * from "./config.js";
export * from "./connection-pool.js";
export * from "./destinations.js";
export * from "./faults.js";
export * from "./load-balancer.js";
export * from "./match.js";
export * from "./outlier.js";
export * from "./retry.js";
export * from "./routes.js";
export * from "./authz.js";
export * from "./jwt.js";
