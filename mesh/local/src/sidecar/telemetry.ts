import { randomBytes } from "node:crypto";
import { Counter, Histogram, Registry } from "prom-client";
import type { PeerWorkload } from "./instances.js";

/**
 * What mesh/local records of every request at the ingress and at each sidecar: one access-log
 * record with the keys of Istio's default JSON access log (plus the source and destination
 * workload and version, and the trace id, which the console and the release analysis read),
 * and Istio's standard metrics — `istio_requests_total` and
 * `istio_request_duration_milliseconds` with Istio's labels — so a dashboard or the canary CLI
 * reads the same names locally as from Prometheus in a cluster.
 */
export interface AccessRecord {
  start_time: string;
  route_name: string | null;
  method: string;
  path: string;
  protocol: string;
  response_code: number;
  response_flags: string;
  response_code_details: string;
  connection_termination_details: string | null;
  bytes_received: number;
  bytes_sent: number;
  duration: number;
  upstream_service_time: number | null;
  x_forwarded_for: string | null;
  user_agent: string | null;
  request_id: string;
  authority: string | null;
  upstream_host: string | null;
  upstream_cluster: string | null;
  upstream_local_address: string | null;
  downstream_local_address: string | null;
  downstream_remote_address: string | null;
  requested_server_name: string | null;
  upstream_transport_failure_reason: string | null;
  // mesh/local's additions, named and valued as the labels of Istio's metrics (Istio puts
  // them in istio_requests_total and Kiali, not in the log).
  /** "source" for a caller's outbound side and the ingress, "destination" for an inbound side. */
  reporter: "source" | "destination";
  /** The caller: its Deployment (payment-v2), app and version labels, canonical service. */
  source_workload: string;
  source_app: string;
  source_version: string;
  source_canonical_service: string;
  source_canonical_revision: string;
  source_principal: string | null;
  /** The service called (payment.shop.svc.cluster.local), known before any endpoint is. */
  destination_service: string | null;
  /** The instance that answered, null when none did (a local reply before an endpoint). */
  destination_workload: string | null;
  destination_app: string | null;
  destination_version: string | null;
  destination_canonical_service: string | null;
  destination_canonical_revision: string | null;
  destination_principal: string | null;
  /**
   * The connection's security as the reporter knows it (Istio's connection_security_policy):
   * the destination says mutual_tls or none; a caller's side always says unknown, as Istio's
   * client-side metrics do, so an mTLS padlock reads the destination's records.
   */
  connection_security_policy: "mutual_tls" | "none" | "unknown";
  grpc_status: string | null;
  attempts: number;
  trace_id: string | null;
  /** This proxy's span for the request, and the caller's (null at the trace's root). */
  span_id: string | null;
  parent_span_id: string | null;
}

type SourceFields = Pick<
  AccessRecord,
  | "source_workload"
  | "source_app"
  | "source_version"
  | "source_canonical_service"
  | "source_canonical_revision"
>;

/** A caller whose workload the proxy cannot tell (no peer metadata): Istio says "unknown". */
export const unknownPeer: PeerWorkload = {
  workload: "unknown",
  app: "unknown",
  version: "unknown",
  canonicalService: "unknown",
  canonicalRevision: "unknown",
  namespace: "unknown",
  principal: "",
};

/** The record's source fields for a calling workload. */
export const sourceFields = (peer: PeerWorkload): SourceFields => ({
  source_workload: peer.workload,
  source_app: peer.app,
  source_version: peer.version,
  source_canonical_service: peer.canonicalService,
  source_canonical_revision: peer.canonicalRevision,
});

/** The record's destination fields for the instance that answers. */
export const destinationFields = (peer: PeerWorkload) => ({
  destination_workload: peer.workload,
  destination_app: peer.app,
  destination_version: peer.version,
  destination_canonical_service: peer.canonicalService,
  destination_canonical_revision: peer.canonicalRevision,
  destination_principal: peer.principal,
});

/** What every access record says of the downstream request, whoever records it. */
export interface RequestFacts {
  req: {
    httpVersion: string;
    headers: Record<string, string | string[] | undefined>;
    socket?: {
      localAddress?: string;
      localPort?: number;
      remoteAddress?: string;
      remotePort?: number;
    } | null;
  };
  method: string;
  path: string;
  headers: Record<string, string | string[]>;
  body?: Buffer;
  startedAt: number;
  startTime: string;
  requestId: string;
  /** Set by traceHop once the proxy has taken the request into its trace. */
  span?: HopSpan;
}

/** Envoy's %PROTOCOL%: HTTP/1.0, HTTP/1.1, HTTP/2 (Node says "2.0"). */
const protocolOf = (httpVersion: string) =>
  httpVersion.startsWith("2") ? "HTTP/2" : `HTTP/${httpVersion}`;

const one = (value: string | string[] | undefined) =>
  (Array.isArray(value) ? value.join(",") : value) ?? null;
const address = (host?: string, port?: number) => (host ? `${host}:${port}` : null);

/** An access record for a request, the reporting proxy's fields given. */
export function accessRecord(
  request: RequestFacts,
  fields: Partial<AccessRecord> & Pick<AccessRecord, "reporter"> & SourceFields,
): AccessRecord {
  const socket = request.req.socket;
  return {
    start_time: request.startTime,
    route_name: null,
    method: request.method,
    path: request.path,
    protocol: protocolOf(request.req.httpVersion),
    response_code: 0,
    response_flags: "-",
    response_code_details: "via_upstream",
    connection_termination_details: null,
    bytes_received: request.body?.length ?? 0,
    bytes_sent: 0,
    duration: Math.round(performance.now() - request.startedAt),
    upstream_service_time: null,
    x_forwarded_for: one(request.headers["x-forwarded-for"]),
    user_agent: one(request.headers["user-agent"]),
    request_id: request.requestId,
    authority: one(request.req.headers[":authority"] ?? request.req.headers.host),
    upstream_host: null,
    upstream_cluster: null,
    upstream_local_address: null,
    downstream_local_address: address(socket?.localAddress, socket?.localPort),
    downstream_remote_address: address(socket?.remoteAddress, socket?.remotePort),
    requested_server_name: null,
    upstream_transport_failure_reason: null,
    source_principal: null,
    destination_service: null,
    destination_workload: null,
    destination_app: null,
    destination_version: null,
    destination_canonical_service: null,
    destination_canonical_revision: null,
    destination_principal: null,
    connection_security_policy: "unknown",
    grpc_status: null,
    attempts: 0,
    trace_id: request.span?.traceId ?? traceIdOf(one(request.headers.traceparent) ?? undefined),
    span_id: request.span?.spanId ?? null,
    parent_span_id: request.span?.parentSpanId ?? null,
    ...fields,
  };
}

export interface Telemetry {
  record(entry: AccessRecord): void;
  registry: Registry;
}

/** Envoy's default histogram buckets (Istio keeps them unless a pod annotation says otherwise). */
const durationBuckets = [
  0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000,
  600_000, 1_800_000, 3_600_000,
];
/** Istio's standard labels (istio/proxy's stats plugin). */
const labelNames = [
  "reporter",
  "source_workload",
  "source_workload_namespace",
  "source_principal",
  "source_app",
  "source_version",
  "source_canonical_service",
  "source_canonical_revision",
  "source_cluster",
  "destination_workload",
  "destination_workload_namespace",
  "destination_principal",
  "destination_app",
  "destination_version",
  "destination_service",
  "destination_service_name",
  "destination_service_namespace",
  "destination_canonical_service",
  "destination_canonical_revision",
  "destination_cluster",
  "request_protocol",
  "response_code",
  "response_flags",
  "grpc_response_status",
  "connection_security_policy",
] as const;

/** The trace id of a W3C traceparent header, if it has one. */
export function traceIdOf(traceparent: string | undefined): string | null {
  const match = /^[\da-f]{2}-([\da-f]{32})-[\da-f]{16}-[\da-f]{2}$/.exec(traceparent ?? "");
  return match?.[1] ?? null;
}

/** A proxy's span for one request: its place in the trace the request carries. */
export interface HopSpan {
  traceId: string;
  spanId: string;
  /** The caller's span (the traceparent's parent-id as received); null at a trace's root. */
  parentSpanId: string | null;
}

const traceparentPattern = /^00-([\da-f]{32})-([\da-f]{16})-([\da-f]{2})$/;

/**
 * The proxy's span for a request, as an Envoy with tracing on makes one: where the request
 * carries no valid W3C traceparent, the proxy starts the trace and decides whether it is
 * sampled (samplingPercentage); otherwise the trace and its sampled flag are the caller's. The
 * traceparent sent on names this span as the parent, so the next hop (a proxy or the app)
 * nests under it; tracestate passes unchanged.
 */
export function traceHop(
  request: { headers: Record<string, string | string[]>; span?: HopSpan },
  samplingPercentage: number,
  random: () => number = Math.random,
): HopSpan {
  const received = request.headers.traceparent;
  const match = typeof received === "string" ? traceparentPattern.exec(received) : null;
  const spanId = randomBytes(8).toString("hex");
  const [traceId, parentSpanId, flags] = match
    ? [match[1]!, match[2]!, match[3]!]
    : [randomBytes(16).toString("hex"), null, random() * 100 < samplingPercentage ? "01" : "00"];
  request.headers.traceparent = `00-${traceId}-${spanId}-${flags}`;
  request.span = { traceId, spanId, parentSpanId };
  return request.span;
}

/** Istio's default cluster id (CLUSTER_ID), the `*_cluster` label of one-cluster meshes. */
const cluster = "Kubernetes";

export function createTelemetry(options: {
  namespace: string;
  onRecord(entry: AccessRecord): void;
}): Telemetry {
  const registry = new Registry();
  const requests = new Counter({
    name: "istio_requests_total",
    help: "Requests through the ingress and the sidecars (Istio's standard metric)",
    labelNames,
    registers: [registry],
  });
  const duration = new Histogram({
    name: "istio_request_duration_milliseconds",
    help: "Request duration at the reporting proxy, in milliseconds (Istio's standard metric)",
    labelNames,
    buckets: durationBuckets,
    registers: [registry],
  });
  return {
    registry,
    record(entry) {
      const unknown = (value: string | null) => value ?? "unknown";
      const [serviceName, serviceNamespace] = entry.destination_service?.split(".") ?? [];
      const labels = {
        reporter: entry.reporter,
        source_workload: entry.source_workload,
        source_workload_namespace:
          entry.source_workload === "istio-ingressgateway" ? "istio-system" : options.namespace,
        source_principal: entry.source_principal ? `spiffe://${entry.source_principal}` : "unknown",
        source_app: entry.source_app,
        source_version: entry.source_version,
        source_canonical_service: entry.source_canonical_service,
        source_canonical_revision: entry.source_canonical_revision,
        source_cluster: cluster,
        destination_workload: unknown(entry.destination_workload),
        destination_workload_namespace: entry.destination_workload ? options.namespace : "unknown",
        destination_principal: entry.destination_principal
          ? `spiffe://${entry.destination_principal}`
          : "unknown",
        destination_app: unknown(entry.destination_app),
        destination_version: unknown(entry.destination_version),
        destination_service: unknown(entry.destination_service),
        destination_service_name: serviceName ?? "unknown",
        destination_service_namespace: serviceNamespace ?? "unknown",
        destination_canonical_service: unknown(entry.destination_canonical_service),
        destination_canonical_revision: unknown(entry.destination_canonical_revision),
        destination_cluster: entry.destination_workload ? cluster : "unknown",
        request_protocol: entry.grpc_status !== null ? "grpc" : "http",
        response_code: String(entry.response_code),
        response_flags: entry.response_flags,
        grpc_response_status: entry.grpc_status ?? "",
        connection_security_policy: entry.connection_security_policy,
      };
      requests.inc(labels);
      duration.observe(labels, entry.duration);
      options.onRecord(entry);
    },
  };
}
