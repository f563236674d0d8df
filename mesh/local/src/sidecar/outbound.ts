import http2 from "node:http2";
import { setTimeout as sleep } from "node:timers/promises";
import type { WorkloadCertificate } from "../identity/index.js";
import { mutualTlsSession } from "../identity/index.js";
import {
  backoffMs,
  ConnectionPool,
  chooseFault,
  EndpointPicker,
  isOverflow,
  type MeshConfig,
  type MeshRoute,
  OutlierDetector,
  shouldRetry,
  subsetLabels,
  type TrafficPolicy,
  trafficPolicyFor,
} from "../mesh/index.js";
import { downstreamGone, type ProxiedRequest, localReply as sendLocalReply } from "./downstream.js";
import {
  type Endpoint,
  type EndpointRegistry,
  hostIdOf,
  type PeerWorkload,
  peerWorkloadOf,
} from "./instances.js";
import {
  type AccessRecord,
  accessRecord,
  destinationFields,
  sourceFields,
  type Telemetry,
} from "./telemetry.js";
import {
  relayEndFlags,
  relayResponse,
  SessionPool,
  sendUpstream,
  upstreamResetReply,
} from "./upstream.js";

/** Who is calling: a workload instance's outbound side, or the ingress gateway. */
export type Source = PeerWorkload;

export interface OutboundOptions {
  source: Source;
  config(): MeshConfig;
  endpoints: EndpointRegistry;
  certificate(): WorkloadCertificate;
  telemetry: Telemetry;
  /**
   * How this proxy reaches endpoints: mTLS to their inbound sides (the mesh), or — for the
   * benchmark that measures what the sidecars cost — plaintext h2c straight to the apps.
   */
  transport?: "mtls" | "plaintext";
  random?: () => number;
}

// Envoy's local replies, word for word: callers and tests match on them. A request that got no
// response headers is answered by upstreamResetReply (its reason, and whether it was retried).
export const localReply = {
  noHealthyUpstream: "no healthy upstream",
  overflow: upstreamResetReply("overflow", false).body,
  timeout: "upstream request timeout",
  faultAbort: "fault filter abort",
} as const;

interface Cluster {
  key: string;
  name: string;
  policy: TrafficPolicy;
  policyJson: string;
  pool: ConnectionPool;
  /** Absent without outlierDetection: then no endpoint is ever ejected. */
  outliers: OutlierDetector | undefined;
  picker: EndpointPicker;
  active: Map<string, number>;
}

const clusterName = (config: MeshConfig, host: string, subset: string | undefined, port = 8080) =>
  `outbound|${port}|${subset ?? ""}|${host}.${config.namespace}.svc.cluster.local`;

/**
 * The outbound side of one proxy (a sidecar's, or the ingress gateway's): for a chosen route it
 * applies fault injection, picks an endpoint of the destination subset (load balancer, outlier
 * ejection), holds the connection-pool limits, sends the request over mTLS to the endpoint's
 * inbound side, and retries with Envoy's rules, within the route timeout.
 */
export function createOutbound(options: OutboundOptions) {
  const random = options.random ?? Math.random;
  const clusters = new Map<string, Cluster>();
  const sessions = new SessionPool((key) => {
    const [host, port, spiffeId] = key.split("|");
    if (options.transport === "plaintext") return http2.connect(`http://${host}:${port}`);
    return mutualTlsSession({
      host: host!,
      port: Number(port),
      cert: options.certificate(),
      expectedSpiffeIds: [spiffeId!],
    });
  });

  function clusterFor(config: MeshConfig, host: string, subset: string | undefined, port?: number) {
    const key = `${host}|${subset ?? ""}`;
    const policy = trafficPolicyFor(config, host, subset);
    const policyJson = JSON.stringify(policy);
    let cluster = clusters.get(key);
    // A pushed configuration with another traffic policy starts the cluster afresh, as
    // Envoy's cluster warming does (counters and ejections are per cluster).
    if (!cluster || cluster.policyJson !== policyJson) {
      cluster = {
        key,
        name: clusterName(config, host, subset, port),
        policy,
        policyJson,
        pool: new ConnectionPool(policy.connectionPool),
        outliers: policy.outlierDetection && new OutlierDetector(policy.outlierDetection),
        picker: new EndpointPicker(policy.loadBalancer),
        active: new Map(),
      };
      clusters.set(key, cluster);
    }
    return cluster;
  }

  function record(request: Omit<ProxiedRequest, "res" | "target">, fields: Partial<AccessRecord>) {
    options.telemetry.record(
      accessRecord(request, {
        reporter: "source",
        ...sourceFields(options.source),
        source_principal: options.source.principal,
        ...fields,
      }),
    );
  }

  function reply(
    request: ProxiedRequest,
    status: number,
    body: string,
    fields: Partial<AccessRecord> & { response_flags: string },
    extraHeaders: Record<string, string> = {},
  ) {
    // No x-request-id: Envoy writes it into a response only with always_set_request_id_in_response,
    // which Istio never sets (the record keeps the id).
    const sent = sendLocalReply(request.req, request.res, status, body, extraHeaders);
    record(request, { ...fields, ...sent });
  }

  function sessionKey(endpoint: Endpoint) {
    return `${endpoint.host}|${endpoint.port}|spiffe://${endpoint.instance.principal}`;
  }

  /** Sends one request along a route chosen by the caller (mesh VirtualService or ingress). */
  async function forward(request: ProxiedRequest, route: MeshRoute): Promise<void> {
    const config = options.config();
    const { host, subset } = route.destination;
    const cluster = clusterFor(config, host, subset, route.destination.port);
    const base: Partial<AccessRecord> = {
      route_name: route.name ?? null,
      upstream_cluster: cluster.name,
      destination_service: `${host}.${config.namespace}.svc.cluster.local`,
    };

    // Fault injection runs before the router: an injected abort is the proxy's own answer
    // and is never retried by this proxy.
    // What an app claims of client certificates never leaves its pod (Istio's outbound
    // listeners keep Envoy's SANITIZE).
    delete request.headers["x-forwarded-client-cert"];

    // A client that goes away before its answer cancels the upstream call (Envoy resets the
    // upstream stream and logs DC), so an abandoned request holds no connection or slot; one
    // gone during a fault delay never reaches the router (the fault filter's timer is destroyed).
    const downstream = downstreamGone(request);
    const flags: string[] = [];
    const disconnected = (fields: Partial<AccessRecord>) =>
      record(request, {
        ...fields,
        response_code: 0,
        response_flags: [...flags, "DC"].join(","),
        response_code_details: "downstream_remote_disconnect",
      });

    const fault = chooseFault(route.fault, random);
    if (fault.delayMs) {
      flags.push("DI");
      await sleep(fault.delayMs, undefined, { signal: downstream }).catch(() => {});
      if (downstream.aborted) return disconnected(base);
    }
    if (fault.abort) {
      return reply(request, fault.abort.status, localReply.faultAbort, {
        ...base,
        response_flags: [...flags, "FI"].join(","),
        response_code_details: "fault_filter_abort",
      });
    }

    const labels = subset ? subsetLabels(config, host, subset) : {};
    const deadline = route.timeoutMs ? AbortSignal.timeout(route.timeoutMs) : undefined;
    const cancel = deadline ? AbortSignal.any([deadline, downstream]) : downstream;
    // Envoy's downstream_request_complete_time_: the router has the whole request (after the
    // fault delay); x-envoy-upstream-service-time runs from here to the answer's headers,
    // earlier attempts and backoffs included.
    const requestComplete = performance.now();
    const tried = new Set<string>();
    const retry = route.retry;
    const grpc = String(request.headers["content-type"] ?? "").startsWith("application/grpc");
    // Whether the attempt under way is a retry holding one of the pool's maxRetries.
    let retrying = false;

    for (let attempt = 1; ; attempt++) {
      const candidates = options.endpoints.select(host, labels);
      const hosts = candidates.map(hostIdOf);
      const healthy = new Set(cluster.outliers ? cluster.outliers.healthy(hosts) : hosts);
      const eligible = candidates.filter((e) => healthy.has(hostIdOf(e)));
      if (eligible.length === 0) {
        return reply(request, 503, localReply.noHealthyUpstream, {
          ...base,
          attempts: attempt,
          response_flags: [...flags, "UH"].join(","),
          response_code_details: "no_healthy_upstream",
        });
      }
      // Istio's previous_hosts retry predicate: a retry prefers a host not tried yet.
      const fresh = eligible.filter((e) => !tried.has(e.instance.id));
      const pool = fresh.length ? fresh : eligible;
      const chosen = cluster.picker.pick(
        pool.map((e) => ({
          id: e.instance.id,
          activeRequests: cluster.active.get(e.instance.id) ?? 0,
        })),
        random,
      );
      const endpoint = pool.find((e) => e.instance.id === chosen?.id) ?? pool[0]!;
      tried.add(endpoint.instance.id);
      const target: Partial<AccessRecord> = {
        ...base,
        attempts: attempt,
        upstream_host: `${endpoint.host}:${endpoint.port}`,
        ...destinationFields(peerWorkloadOf(endpoint.instance)),
      };

      const overflow = () => {
        if (retrying) cluster.pool.retryFinished();
        // Envoy answers a pool overflow through onUpstreamReset too ("retried and the latest"
        // after a retry).
        const answer = upstreamResetReply("overflow", attempt > 1);
        return reply(
          request,
          503,
          answer.body,
          {
            ...target,
            response_flags: [...flags, "UO"].join(","),
            response_code_details: answer.details,
          },
          { "x-envoy-overloaded": "true" },
        );
      };
      const held = cluster.pool.acquire();
      if (isOverflow(held)) return overflow();
      const session = sessions.get(sessionKey(endpoint), cluster.pool);
      if (session.connecting) {
        // Waits for the host's connection to come up: Envoy's pending requests.
        const waiting = cluster.pool.waitForConnection();
        if (isOverflow(waiting)) {
          held.release();
          return overflow();
        }
        const connected = () => {
          waiting.release();
          session.off("connect", connected);
          session.off("close", connected);
        };
        session.on("connect", connected);
        session.on("close", connected);
      }
      const id = endpoint.instance.id;
      cluster.active.set(id, (cluster.active.get(id) ?? 0) + 1);
      const release = () => {
        cluster.active.set(id, (cluster.active.get(id) ?? 1) - 1);
        held.release();
        if (retrying) cluster.pool.retryFinished();
        retrying = false;
      };
      const result = await sendUpstream(session, {
        method: request.method,
        path: request.target,
        authority: host,
        headers: { ...request.headers, "x-envoy-attempt-count": String(attempt) },
        body: request.body,
        ...(retry.perTryTimeoutMs ? { timeoutMs: retry.perTryTimeoutMs } : {}),
        signal: cancel,
        // The stream is on a live connection: Envoy's LocalOriginConnectSuccess, so with split
        // local-origin errors only failures to connect add up.
        onPoolReady: () =>
          cluster.outliers?.record(hostIdOf(endpoint), { localOriginSuccess: true }),
      });
      const routeTimedOut = deadline?.aborted ?? false;

      if (downstream.aborted) {
        release();
        if (result.kind === "response") result.stream.close(http2.constants.NGHTTP2_CANCEL);
        return disconnected(target);
      }

      if (result.kind === "response") {
        cluster.outliers?.record(hostIdOf(endpoint), {
          status: outlierStatus(grpc, result.status, result.headers["grpc-status"]),
        });
      } else {
        cluster.outliers?.record(hostIdOf(endpoint), { localOriginFailure: true });
        // A stream reset leaves the session to the other streams; a session that ended or never
        // came up is gone.
        if (result.kind === "connect-failure" || result.kind === "reset")
          sessions.drop(sessionKey(endpoint));
      }

      if (routeTimedOut) {
        release();
        if (result.kind === "response") result.stream.close();
        return reply(request, 504, localReply.timeout, {
          ...target,
          response_flags: [...flags, "UT"].join(","),
          response_code_details: "upstream_response_timeout",
        });
      }

      const outcome =
        result.kind === "response"
          ? {
              kind: "response" as const,
              status: result.status,
              header: (name: string) => {
                const value = result.headers[name];
                return Array.isArray(value) ? value.join(",") : value;
              },
            }
          : { kind: result.kind === "timeout" ? ("per-try-timeout" as const) : result.kind };
      // Envoy's RetryState::shouldRetry: an outcome it would retry is retried unless the
      // retries are used up (URX) or the cluster's maxRetries are all in use (UO); the flag
      // goes before the one of the final answer.
      let retryNow = false;
      if (shouldRetry(retry, outcome)) {
        if (attempt - 1 >= retry.attempts) flags.push("URX");
        else if (!cluster.pool.tryRetry()) flags.push("UO");
        else retryNow = true;
      }
      if (retryNow) {
        release();
        retrying = true;
        if (result.kind === "response") result.stream.close();
        // The route timeout or the client leaving ends the backoff at once.
        await sleep(backoffMs(attempt, random, retry.backoffBaseMs), undefined, {
          signal: cancel,
        }).catch(() => {});
        if (downstream.aborted) {
          cluster.pool.retryFinished();
          return disconnected(target);
        }
        if (deadline?.aborted) {
          cluster.pool.retryFinished();
          return reply(request, 504, localReply.timeout, {
            ...target,
            response_flags: [...flags, "UT"].join(","),
            response_code_details: "upstream_response_timeout",
          });
        }
        continue;
      }
      if (result.kind === "response") {
        // Istio leaves Envoy's debug headers on, so every relayed answer carries it (this
        // proxy's value replaces the one the destination's inbound side set).
        const serviceTime = Math.floor(performance.now() - requestComplete);
        result.headers["x-envoy-upstream-service-time"] = String(serviceTime);
        relayResponse(request.req, request.res, result, (bytes, grpcStatus, ending) => {
          release();
          // After the headers went out, a reset upstream is UC and a client gone is DC; the
          // status stays what the client was sent.
          record(request, {
            ...target,
            response_code: result.status,
            response_flags: [...flags, ...relayEndFlags[ending]].join(",") || "-",
            bytes_sent: bytes,
            upstream_service_time: serviceTime,
            grpc_status: grpcStatus,
          });
        });
        return;
      }
      release();
      if (result.kind === "timeout") {
        return reply(request, 504, localReply.timeout, {
          ...target,
          response_flags: [...flags, "UT"].join(","),
          response_code_details: "upstream_per_try_timeout",
        });
      }
      const answer = upstreamResetReply(result.resetReason, attempt > 1, result.transportFailure);
      return reply(request, 503, answer.body, {
        ...target,
        response_flags: [...flags, answer.flag].join(","),
        response_code_details: answer.details,
        upstream_transport_failure_reason: result.transportFailure ?? null,
      });
    }
  }

  return {
    forward,
    record,
    reply,
    close: () => sessions.close(),
  };
}

export type Outbound = ReturnType<typeof createOutbound>;

// Envoy's Grpc::Utility::grpcToHttpStatus.
const GRPC_TO_HTTP = [
  200, 499, 500, 400, 504, 404, 409, 403, 429, 400, 409, 400, 501, 500, 503, 500, 401,
];

/**
 * The status outlier detection counts for an answer: for a gRPC request, a grpc-status in the
 * response headers (trailers-only) as its HTTP equivalent, unless the status is a 5xx already
 * (Router::onUpstreamHeaders).
 */
export function outlierStatus(
  grpc: boolean,
  status: number,
  grpcStatus: string | string[] | undefined,
): number {
  if (!grpc || typeof grpcStatus !== "string" || (status >= 500 && status <= 599)) return status;
  return GRPC_TO_HTTP[Number(grpcStatus)] ?? 500;
}
