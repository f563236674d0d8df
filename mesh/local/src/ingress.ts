import { randomUUID } from "node:crypto";
import http2 from "node:http2";
import { createDualProtocolServer, type DualProtocolServer } from "@thinmesh/platform";
import {
  createUpstreams,
  type DownstreamRequest,
  type DownstreamResponse,
  defaultMaxRequestBytes,
  forwardableHeaders,
  readRequestBody,
} from "./forward.js";
import { normalizeRequestTarget } from "./http-path.js";
import type { IngressConfig } from "./istio.js";
import { chooseRoute, workloadOf } from "./routing.js";

/** One request through the ingress, in the spirit of Envoy's access log. */
export interface Hop {
  time: string;
  source: "ingress";
  destination: string | undefined;
  route: string | undefined;
  method: string;
  /** The normalised path (what was routed and forwarded), or the raw one if refused; no query. */
  path: string;
  protocol: string;
  /** 0 when no response was sent (the client went away first). */
  status: number;
  /**
   * Envoy's response flags: NR no route, UH no healthy upstream, UF upstream connection failure,
   * UC upstream connection termination, URX retries exhausted, DC downstream connection
   * termination, DPE downstream protocol error.
   */
  flags: string;
  /** Envoy's response code details (via_upstream, route_not_found, path_normalization_failed, …). */
  details: string;
  attempts: number;
  durationMs: number;
  requestId: string;
  traceparent: string | undefined;
}

/**
 * The ingress's limits on what a client may hold. Envoy's defaults are no request headers
 * timeout and a 5 min stream idle timeout; on a laptop a client that has not sent its headers
 * in 10 s or its (at most 1 MiB) body in 30 s is broken or hostile, and holding its connection
 * only costs memory. The idle timeout stays Envoy's, so a slow upstream is not cut off early.
 */
export const ingressLimits = {
  maxRequestBytes: defaultMaxRequestBytes,
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 30_000,
  idleTimeoutMs: 300_000,
};

export interface IngressOptions extends Partial<typeof ingressLimits> {
  config: IngressConfig;
  /** The base URL of a workload's instance, if it is running. */
  upstream(workload: string): string | undefined;
  onHop(hop: Hop): void;
}

// Istio retries connect failures and refused streams twice by default (no retries block
// needed). A reset before any response header is retried as well: an upstream's keep-alive
// connection that closes as it is reused shows up as one, and Envoy's pool hides that race.
const defaultRetries = 2;
// Envoy half-closes a connection it refuses and waits this long for the client to close
// (delayed_close_timeout) before closing it hard, so that the client reads the answer.
const delayedCloseMs = 1000;

/** A local stand-in for the Istio ingress gateway, routing by its Gateway and VirtualServices. */
export function createIngress(options: IngressOptions): DualProtocolServer {
  const limits = {
    maxRequestBytes: options.maxRequestBytes ?? ingressLimits.maxRequestBytes,
    headersTimeoutMs: options.headersTimeoutMs ?? ingressLimits.headersTimeoutMs,
    requestTimeoutMs: options.requestTimeoutMs ?? ingressLimits.requestTimeoutMs,
    idleTimeoutMs: options.idleTimeoutMs ?? ingressLimits.idleTimeoutMs,
  };
  const upstreams = createUpstreams();

  async function handle(req: DownstreamRequest, res: DownstreamResponse) {
    // Whatever a client does (reset, half a body, a bad chunk), its streams' errors are
    // answered here or in the access record, never thrown.
    req.on("error", () => {});
    res.on("error", () => {});
    const started = performance.now();
    const rawTarget = req.url ?? "";
    const headers = forwardableHeaders(req.headers);
    const requestId = (headers["x-request-id"] as string | undefined) ?? randomUUID();
    headers["x-request-id"] = requestId;
    headers["x-forwarded-proto"] = "http";
    const remote = req.socket?.remoteAddress;
    if (remote)
      headers["x-forwarded-for"] = headers["x-forwarded-for"]
        ? `${headers["x-forwarded-for"]}, ${remote}`
        : remote;

    const hop: Hop = {
      time: new Date().toISOString(),
      source: "ingress",
      destination: undefined,
      route: undefined,
      method: req.method ?? "",
      path: rawTarget.split("?")[0] ?? "", // never the query: it may carry a token
      protocol: `HTTP/${req.httpVersion}`,
      status: 0,
      flags: "-",
      details: "",
      attempts: 0,
      durationMs: 0,
      requestId,
      traceparent: headers.traceparent as string | undefined,
    };
    const record = (status: number, flags: string, details: string) => {
      hop.status = status;
      hop.flags = flags;
      hop.details = details;
      hop.durationMs = Math.round((performance.now() - started) * 100) / 100;
      options.onHop(hop);
    };
    // A local reply (Envoy's sendLocalReply). When the request body was not read, the
    // connection cannot carry another request: it is closed after the answer.
    const reply = (status: number, flags: string, details: string, text: string) => {
      if (!res.headersSent && !res.destroyed) {
        const unread = !req.complete;
        res.writeHead(status, {
          "content-type": "text/plain",
          "x-request-id": requestId,
          ...(unread && req.httpVersionMajor === 1 && { connection: "close" }),
        });
        res.end(text);
        if (unread) closeAfterResponse(req, res);
      } else res.destroy();
      record(status, flags, details);
    };

    try {
      await route();
    } catch (error) {
      // A bug here must not end the process that fronts the whole shop.
      reply(500, "-", `ingress_error{${(error as Error)?.message ?? String(error)}}`, "");
    }

    async function route() {
      const normalized = normalizeRequestTarget(rawTarget);
      if (!normalized.ok)
        return reply(400, "-", "path_normalization_failed", `Bad Request: ${normalized.reason}`);
      hop.path = normalized.path;

      const choice = chooseRoute(options.config.routes, {
        path: normalized.path,
        method: req.method ?? "GET",
        header: (name) => {
          const value = req.headers[name];
          return Array.isArray(value) ? value.join(",") : value;
        },
      });
      if (!choice) return reply(404, "NR", "route_not_found", "");
      hop.route = choice.route.name;
      const workload = workloadOf(choice.host);
      hop.destination = workload ?? choice.host;
      const base = workload && options.upstream(workload);
      if (!base) return reply(503, "UH", "no_healthy_upstream", "no healthy upstream");

      const read = await readRequestBody(req, {
        maxBytes: limits.maxRequestBytes,
        timeoutMs: limits.requestTimeoutMs,
      });
      if (!read.ok) {
        switch (read.problem) {
          case "too-large":
            return reply(413, "-", "request_payload_too_large", "Payload Too Large");
          case "timeout":
            return reply(408, "-", "request_overall_timeout", "request timeout");
          case "malformed": // Node's HTTP/1.1 parser has answered 400 and closed the connection
            return record(400, "DPE", "http1.codec_error");
          case "disconnect":
            return record(0, "DC", "downstream_remote_disconnect");
        }
      }

      const request = {
        method: req.method ?? "GET",
        target: normalized.target,
        headers,
        body: read.body,
        protocol: req.httpVersionMajor === 2 ? ("h2" as const) : ("http/1.1" as const),
      };
      for (let attempt = 1; ; attempt++) {
        hop.attempts = attempt;
        const outcome = await upstreams.forward(base, request, res);
        if (outcome.ok) return record(outcome.status, "-", "via_upstream");
        if (outcome.failure === "downstream-disconnect")
          return record(outcome.status ?? 0, "DC", "downstream_remote_disconnect");
        if (outcome.responseStarted)
          return record(outcome.status ?? 0, "UC", "upstream_reset_after_response_started");
        if (attempt <= defaultRetries) continue;
        const flag = outcome.failure === "connect-failure" ? "UF" : "UC";
        return reply(
          503,
          attempt > 1 ? `${flag},URX` : flag,
          `upstream_reset_before_response_started{${outcome.failure}}`,
          "upstream connect error or disconnect/reset before headers",
        );
      }
    }
  }

  const server = createDualProtocolServer((req, res) => void handle(req, res), {
    headersTimeoutMs: limits.headersTimeoutMs,
    idleTimeoutMs: limits.idleTimeoutMs,
  });
  return {
    ...server,
    async close(graceMs, onDrained) {
      await server.close(graceMs, onDrained);
      upstreams.close();
    },
  };
}

/** Called right after answering a request whose body was left unread. */
function closeAfterResponse(req: DownstreamRequest, res: DownstreamResponse) {
  if (req.httpVersionMajor === 2) {
    // The answer is complete; RST_STREAM(NO_ERROR), sent once it is flushed, tells the client
    // to stop sending (RFC 9113 section 8.1).
    const { stream } = req as http2.Http2ServerRequest;
    if (!stream.closed) stream.close(http2.constants.NGHTTP2_NO_ERROR);
    return;
  }
  // Node half-closes after "connection: close" and discards what still arrives.
  res.once("finish", () => setTimeout(() => req.socket.destroy(), delayedCloseMs).unref());
}
