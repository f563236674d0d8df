import { randomBytes } from "node:crypto";
import { Counter, Histogram, Registry } from "prom-client";

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
  // mesh/local's additions (Istio puts these in metrics labels and in Kiali, not in the log).
  /** "source" for a caller's outbound side and the ingress, "destination" for an inbound side. */
  reporter: "source" | "destination";
  source_workload: string;
  source_version: string;
  source_principal: string | null;
  destination_workload: string | null;
  destination_version: string | null;
  destination_principal: string | null;
  /** The connection's security: mutual_tls or none (Istio's connection_security_policy). */
  connection_security_policy: "mutual_tls" | "none";
  grpc_status: string | null;
  attempts: number;
  trace_id: string | null;
  /** This proxy's span for the request, and the caller's (null at the trace's root). */
  span_id: string | null;
  parent_span_id: string | null;
}

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

const one = (value: string | string[] | undefined) =>
  (Array.isArray(value) ? value.join(",") : value) ?? null;
const address = (host?: string, port?: number) => (host ? `${host}:${port}` : null);

/** An access record for a request, the reporting proxy's fields given. */
export function accessRecord(
  request: RequestFacts,
  fields: Partial<AccessRecord> &
    Pick<AccessRecord, "reporter" | "source_workload" | "source_version">,
): AccessRecord {
  const socket = request.req.socket;
  return {
    start_time: request.startTime,
    route_name: null,
    method: request.method,
    path: request.path,
    protocol: `HTTP/${request.req.httpVersion}`,
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
    destination_workload: null,
    destination_version: null,
    destination_principal: null,
    connection_security_policy: "none",
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

const durationBuckets = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000];
const labelNames = [
  "reporter",
  "source_workload",
  "source_workload_namespace",
  "source_version",
  "source_principal",
  "destination_workload",
  "destination_workload_namespace",
  "destination_version",
  "destination_service",
  "destination_service_name",
  "destination_principal",
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
      const service = entry.destination_workload
        ? `${entry.destination_workload}.${options.namespace}.svc.cluster.local`
        : "unknown";
      const labels = {
        reporter: entry.reporter,
        source_workload: entry.source_workload,
        source_workload_namespace:
          entry.source_workload === "istio-ingressgateway" ? "istio-system" : options.namespace,
        source_version: entry.source_version,
        source_principal: entry.source_principal ? `spiffe://${entry.source_principal}` : "unknown",
        destination_workload: entry.destination_workload ?? "unknown",
        destination_workload_namespace: options.namespace,
        destination_version: entry.destination_version ?? "unknown",
        destination_service: service,
        destination_service_name: entry.destination_workload ?? "unknown",
        destination_principal: entry.destination_principal
          ? `spiffe://${entry.destination_principal}`
          : "unknown",
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
