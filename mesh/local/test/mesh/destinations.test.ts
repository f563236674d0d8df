import { describe, expect, it } from "vitest";
import { MeshConfigError } from "../../src/mesh/config.js";
import { subsetLabels, trafficPolicyFor, UNLIMITED } from "../../src/mesh/destinations.js";
import { configFrom, repoConfig } from "./support.js";

describe("trafficPolicyFor", () => {
  it("reads the repository's DestinationRules", () => {
    const policy = trafficPolicyFor(repoConfig(), "catalog.shop.svc.cluster.local", "v1");
    expect(policy).toEqual({
      tlsMode: "ISTIO_MUTUAL",
      loadBalancer: "LEAST_REQUEST",
      connectionPool: {
        maxConnections: 100,
        http1MaxPendingRequests: 128,
        http2MaxRequests: 256,
        maxRetries: UNLIMITED,
        maxRequestsPerConnection: 0,
        connectTimeoutMs: 2000,
        idleTimeoutMs: 60_000,
      },
      outlierDetection: {
        consecutive5xxErrors: 0,
        splitExternalLocalOriginErrors: true,
        consecutiveLocalOriginFailures: 5,
        intervalMs: 10_000,
        baseEjectionTimeMs: 30_000,
        maxEjectionPercent: 50,
        maxEjectionTimeMs: 300_000,
      },
    });
  });

  it("gives Istio's defaults without a DestinationRule", () => {
    expect(trafficPolicyFor(configFrom(""), "payment")).toEqual({
      tlsMode: "ISTIO_MUTUAL",
      loadBalancer: "LEAST_REQUEST",
      connectionPool: {
        maxConnections: UNLIMITED,
        http1MaxPendingRequests: UNLIMITED,
        http2MaxRequests: UNLIMITED,
        maxRetries: UNLIMITED,
        maxRequestsPerConnection: 0,
        connectTimeoutMs: 10_000,
        idleTimeoutMs: 3_600_000,
      },
    });
  });

  const rule = configFrom(`
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: payment, namespace: shop }
spec:
  host: payment
  trafficPolicy:
    loadBalancer: { simple: ROUND_ROBIN }
    connectionPool: { tcp: { maxConnections: 1, idleTimeout: 5s }, http: { http1MaxPendingRequests: 1, maxRetries: 3, maxRequestsPerConnection: 10 } }
    outlierDetection: { consecutiveGatewayErrors: 2, maxEjectionPercent: 0 }
  subsets:
    - name: v1
      labels: { version: v1 }
    - name: v2
      labels: { version: v2, track: canary }
      trafficPolicy:
        loadBalancer: { simple: RANDOM }
        connectionPool: { http: { http2MaxRequests: 7 } }
`);

  it("uses Envoy's outlier defaults for unset fields once the section is present", () => {
    expect(trafficPolicyFor(rule, "payment").outlierDetection).toEqual({
      consecutive5xxErrors: 5,
      consecutiveGatewayErrors: 2,
      intervalMs: 10_000,
      baseEjectionTimeMs: 30_000,
      maxEjectionPercent: 10,
      maxEjectionTimeMs: 300_000,
    });
    expect(trafficPolicyFor(rule, "payment").connectionPool).toMatchObject({
      maxConnections: 1,
      http1MaxPendingRequests: 1,
      maxRetries: 3,
      maxRequestsPerConnection: 10,
      idleTimeoutMs: 5000,
    });
  });

  it("reads consecutiveLocalOriginFailures: 0 as Envoy's default 5 (Istio passes only > 0)", () => {
    const zero = configFrom(`
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: payment, namespace: shop }
spec:
  host: payment
  trafficPolicy:
    outlierDetection: { splitExternalLocalOriginErrors: true, consecutiveLocalOriginFailures: 0 }
`);
    expect(trafficPolicyFor(zero, "payment").outlierDetection).toMatchObject({
      splitExternalLocalOriginErrors: true,
      consecutiveLocalOriginFailures: 5,
    });
  });

  it("lets a subset's sections replace the top-level ones, each as a whole", () => {
    const v2 = trafficPolicyFor(rule, "payment", "v2");
    expect(v2.loadBalancer).toBe("RANDOM");
    // The subset's connectionPool replaces the top-level one entirely (Istio's merge).
    expect(v2.connectionPool.http2MaxRequests).toBe(7);
    expect(v2.connectionPool.maxConnections).toBe(UNLIMITED);
    expect(v2.outlierDetection?.consecutiveGatewayErrors).toBe(2);
    expect(trafficPolicyFor(rule, "payment", "v1").loadBalancer).toBe("ROUND_ROBIN");
  });

  it("gives a subset's labels and refuses unknown subsets", () => {
    expect(subsetLabels(rule, "payment", "v2")).toEqual({ version: "v2", track: "canary" });
    expect(subsetLabels(repoConfig(), "payment", "v1")).toEqual({ version: "v1" });
    expect(() => subsetLabels(rule, "payment", "v3")).toThrowError(MeshConfigError);
    expect(() => trafficPolicyFor(rule, "payment", "v3")).toThrow(/unknown subset v3 of payment/);
  });
});
