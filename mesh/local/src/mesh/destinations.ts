/**
 * DestinationRule traffic policy as Istio builds an Envoy cluster from it
 * (pilot/pkg/networking/core/cluster_traffic_policy.go): a subset's trafficPolicy replaces the
 * rule's top-level one section by section (tls, loadBalancer, connectionPool, outlierDetection),
 * and what is unset gets Istio's defaults: LEAST_REQUEST; circuit-breaker thresholds of 2^32−1
 * (Istio's, not Envoy's 1024); meshConfig's connectTimeout 10 s; Envoy's upstream idle timeout of
 * 1 h; no outlier detection unless the section is written (then Envoy's defaults: 5 consecutive
 * 5xx, interval 10 s, base ejection 30 s, at most 10 % ejected, ejection capped at 300 s; gateway
 * errors only when consecutiveGatewayErrors is set). Istio's auto-mTLS makes the TLS mode
 * ISTIO_MUTUAL where the destination has a sidecar: locally every workload has one.
 */
import { durationMs, type MeshConfig, MeshConfigError, type TrafficPolicySpec } from "./config.js";
import { workloadOf } from "./match.js";

export type LoadBalancerKind = "ROUND_ROBIN" | "LEAST_REQUEST" | "RANDOM";

export interface ConnectionPoolSettings {
  maxConnections: number;
  http1MaxPendingRequests: number;
  http2MaxRequests: number;
  maxRetries: number;
  /** 0: unlimited. */
  maxRequestsPerConnection: number;
  connectTimeoutMs: number;
  idleTimeoutMs: number;
}

export interface OutlierPolicy {
  /** 0: not counted. */
  consecutive5xxErrors: number;
  consecutiveGatewayErrors?: number;
  /**
   * Counts local-origin failures (connect failures, resets, timeouts) apart: then only answers
   * count as 5xx and gateway errors, and consecutiveLocalOriginFailures of the others eject.
   */
  splitExternalLocalOriginErrors?: boolean;
  consecutiveLocalOriginFailures?: number;
  intervalMs: number;
  baseEjectionTimeMs: number;
  maxEjectionPercent: number;
  maxEjectionTimeMs: number;
}

export interface TrafficPolicy {
  tlsMode: "ISTIO_MUTUAL" | "DISABLE";
  loadBalancer: LoadBalancerKind;
  connectionPool: ConnectionPoolSettings;
  outlierDetection?: OutlierPolicy;
}

/** Istio's getDefaultCircuitBreakerThresholds: math.MaxUint32 for every threshold. */
export const UNLIMITED = 2 ** 32 - 1;

function ruleFor(config: MeshConfig, host: string) {
  const short = workloadOf(host, config.namespace);
  return config.destinationRules.find(
    (rule) => workloadOf(rule.spec.host, config.namespace) === short,
  );
}

export function trafficPolicyFor(config: MeshConfig, host: string, subset?: string): TrafficPolicy {
  const rule = ruleFor(config, host);
  const top: TrafficPolicySpec = rule?.spec.trafficPolicy ?? {};
  const ofSubset: TrafficPolicySpec = subset
    ? (findSubset(config, host, subset).trafficPolicy ?? {})
    : {};
  // Istio's MergeTrafficPolicy: each section set on the subset replaces the top-level one.
  const merged: TrafficPolicySpec = { ...top, ...ofSubset };
  const pool = merged.connectionPool;
  const outlier = merged.outlierDetection;
  return {
    tlsMode: merged.tls?.mode ?? "ISTIO_MUTUAL",
    loadBalancer: merged.loadBalancer?.simple ?? "LEAST_REQUEST",
    connectionPool: {
      maxConnections: pool?.tcp?.maxConnections ?? UNLIMITED,
      http1MaxPendingRequests: pool?.http?.http1MaxPendingRequests ?? UNLIMITED,
      http2MaxRequests: pool?.http?.http2MaxRequests ?? UNLIMITED,
      // Istio only passes maxRetries > 0 (0 means "unset" in its API).
      maxRetries: pool?.http?.maxRetries || UNLIMITED,
      maxRequestsPerConnection: pool?.http?.maxRequestsPerConnection ?? 0,
      connectTimeoutMs: pool?.tcp?.connectTimeout ? durationMs(pool.tcp.connectTimeout) : 10_000,
      idleTimeoutMs: durationMs(pool?.http?.idleTimeout ?? pool?.tcp?.idleTimeout ?? "1h"),
    },
    ...(outlier && {
      outlierDetection: {
        consecutive5xxErrors: outlier.consecutive5xxErrors ?? 5,
        ...(outlier.consecutiveGatewayErrors && {
          consecutiveGatewayErrors: outlier.consecutiveGatewayErrors,
        }),
        // Istio's default of 5 applies only with the split on.
        ...(outlier.splitExternalLocalOriginErrors && {
          splitExternalLocalOriginErrors: true,
          // Istio passes the value only when > 0; otherwise Envoy's default, 5, applies.
          consecutiveLocalOriginFailures: outlier.consecutiveLocalOriginFailures || 5,
        }),
        intervalMs: durationMs(outlier.interval ?? "10s"),
        baseEjectionTimeMs: durationMs(outlier.baseEjectionTime ?? "30s"),
        // Istio passes maxEjectionPercent only when > 0; Envoy's default is 10.
        maxEjectionPercent: outlier.maxEjectionPercent || 10,
        maxEjectionTimeMs: 300_000,
      },
    }),
  };
}

function findSubset(config: MeshConfig, host: string, subset: string) {
  const found = ruleFor(config, host)?.spec.subsets?.find((s) => s.name === subset);
  if (!found) {
    throw new MeshConfigError(
      `unknown subset ${subset} of ${host} (no DestinationRule defines it)`,
    );
  }
  return found;
}

/** The labels an endpoint must carry to belong to a subset. */
export function subsetLabels(
  config: MeshConfig,
  host: string,
  subset: string,
): Record<string, string> {
  return findSubset(config, host, subset).labels;
}
