import http2 from "node:http2";
import {
  type DownstreamRequest,
  type DownstreamResponse,
  defaultMaxRequestBytes,
  forwardableHeaders,
  readRequestBody,
  responseCompleted,
} from "../forward.js";
import { normalizeRequestTarget } from "../http-path.js";
import type { HopSpan } from "./telemetry.js";
import { newRequestId } from "./upstream.js";

export type { DownstreamRequest, DownstreamResponse };

/** A request as a proxy has read it: its path normalised once, its body buffered. */
export interface ProxiedRequest {
  req: DownstreamRequest;
  res: DownstreamResponse;
  method: string;
  /** The normalised path: what routes and policies match. */
  path: string;
  /** The normalised path and the query as received: exactly what goes upstream. */
  target: string;
  headers: Record<string, string | string[]>;
  body: Buffer;
  startedAt: number;
  startTime: string;
  requestId: string;
  /** The proxy's span for it (traceHop). */
  span?: HopSpan;
}

/**
 * What a client may hold of a listener. Envoy's defaults are no request-headers timeout and a
 * 5 min stream idle timeout; on a laptop a client that has not sent its headers in 10 s or its
 * (at most 1 MiB) body in 30 s is broken or hostile, and holding its connection only costs
 * memory. The idle timeout stays Envoy's, so a slow upstream is not cut off early.
 */
export const listenerLimits = {
  maxRequestBytes: defaultMaxRequestBytes,
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 30_000,
  idleTimeoutMs: 300_000,
};
export type ListenerLimits = typeof listenerLimits;

// Envoy half-closes a connection it refuses and waits this long for the client to close
// (delayed_close_timeout) before closing it hard, so that the client reads the answer.
const delayedCloseMs = 1000;

/** Envoy's Grpc::Utility::httpToGrpcStatus (gRPC's HTTP-to-status mapping). */
export function grpcStatusOfHttp(status: number): number {
  switch (status) {
    case 400:
      return 13; // INTERNAL
    case 401:
      return 16; // UNAUTHENTICATED
    case 403:
      return 7; // PERMISSION_DENIED
    case 404:
      return 12; // UNIMPLEMENTED
    case 429:
    case 502:
    case 503:
    case 504:
      return 14; // UNAVAILABLE
    default:
      return 2; // UNKNOWN
  }
}

/** A gRPC request, as Envoy tells one (application/grpc, +proto, ;…; not gRPC-Web). */
const isGrpcRequest = (req: DownstreamRequest) =>
  /^application\/grpc($|[+;])/i.test(String(req.headers["content-type"] ?? ""));

/** gRPC's grpc-message encoding: bytes outside printable ASCII, and "%", as %XX. */
const percentEncoded = (text: string) =>
  [...Buffer.from(text, "utf8")]
    .map((byte) =>
      byte < 0x20 || byte > 0x7e || byte === 0x25
        ? `%${byte.toString(16).toUpperCase().padStart(2, "0")}`
        : String.fromCharCode(byte),
    )
    .join("");

/** What a local reply sent, for its access record. */
export interface LocalReplySent {
  response_code: number;
  grpc_status: string | null;
  bytes_sent: number;
}

/**
 * A proxy's own answer (Envoy's sendLocalReply); closes a connection whose body was not read.
 * To a gRPC request it is a trailers-only gRPC response, as Envoy's: HTTP 200, grpc-status
 * mapped from the status (403 → PERMISSION_DENIED, 503 → UNAVAILABLE …), the body as
 * grpc-message; its access record then says 200 and the gRPC status, as Envoy's does.
 */
export function localReply(
  req: DownstreamRequest,
  res: DownstreamResponse,
  status: number,
  body: string,
  headers: Record<string, string> = {},
): LocalReplySent {
  if (res.headersSent || res.destroyed) {
    res.destroy();
    return { response_code: status, grpc_status: null, bytes_sent: 0 };
  }
  const unread = !req.complete;
  if (isGrpcRequest(req)) {
    const grpcStatus = String(grpcStatusOfHttp(status));
    const grpcHeaders = {
      ...headers,
      "content-type": "application/grpc",
      "grpc-status": grpcStatus,
      ...(body && { "grpc-message": percentEncoded(body) }),
    };
    if (req.httpVersionMajor === 2) {
      (res as http2.Http2ServerResponse).stream.respond(
        { ":status": 200, ...grpcHeaders },
        { endStream: true },
      );
    } else {
      res.writeHead(200, { ...grpcHeaders, ...(unread && { connection: "close" }) });
      res.end();
    }
    if (unread) closeAfterResponse(req, res);
    return { response_code: 200, grpc_status: grpcStatus, bytes_sent: 0 };
  }
  res.writeHead(status, {
    "content-type": "text/plain",
    "content-length": String(Buffer.byteLength(body)),
    ...headers,
    ...(unread && req.httpVersionMajor === 1 && { connection: "close" }),
  });
  res.end(body);
  if (unread) closeAfterResponse(req, res);
  return { response_code: status, grpc_status: null, bytes_sent: Buffer.byteLength(body) };
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

/** Why a request could not be read, for the access record (Envoy's flags and details). */
export interface Refusal {
  /** The access record's fields for the refusal: what was answered and why. */
  fields: LocalReplySent & { response_flags: string; response_code_details: string };
  /** What was known of the request when it was refused. */
  request: Omit<ProxiedRequest, "body" | "res" | "target"> & { body: Buffer };
}

/**
 * Reads a downstream request the way every mesh/local listener must before routing or policy:
 * the path normalised once (what is matched is what is forwarded: Istio's
 * `pathNormalization: BASE`), the body read within the listener's bounds. Answers 400, 408 or
 * 413 itself and reports the refusal; never throws, whatever the client does.
 */
export async function readDownstream(
  req: DownstreamRequest,
  res: DownstreamResponse,
  limits: Pick<ListenerLimits, "maxRequestBytes" | "requestTimeoutMs">,
  onRefused: (refusal: Refusal) => void,
): Promise<ProxiedRequest | undefined> {
  req.on("error", () => {});
  res.on("error", () => {});
  const startedAt = performance.now();
  const startTime = new Date().toISOString();
  const headers = forwardableHeaders(req.headers);
  const requestId = newRequestId(headers);
  const known = {
    req,
    method: req.method ?? "",
    // Never the query in a record of a refused request: a token may be in it.
    path: (req.url ?? "").split("?")[0] ?? "",
    headers,
    body: Buffer.alloc(0),
    startedAt,
    startTime,
    requestId,
  };
  const refuse = (status: number, flags: string, details: string, text?: string) => {
    const sent =
      text === undefined
        ? { response_code: status, grpc_status: null, bytes_sent: 0 }
        : // No x-request-id: Envoy sets it in a response only with always_set_request_id_in_response.
          localReply(req, res, status, text);
    onRefused({
      fields: { ...sent, response_flags: flags, response_code_details: details },
      request: known,
    });
    return undefined;
  };

  const normalized = normalizeRequestTarget(req.url ?? "");
  if (!normalized.ok) {
    return refuse(400, "-", "path_normalization_failed", `Bad Request: ${normalized.reason}`);
  }
  known.path = normalized.path;
  const read = await readRequestBody(req, {
    maxBytes: limits.maxRequestBytes,
    timeoutMs: limits.requestTimeoutMs,
  });
  if (!read.ok) {
    switch (read.problem) {
      case "too-large":
        return refuse(413, "-", "request_payload_too_large", "Payload Too Large");
      case "timeout":
        return refuse(408, "-", "request_overall_timeout", "request timeout");
      case "malformed": // Node's HTTP/1.1 parser has answered 400 and closed the connection
        return refuse(400, "DPE", "http1.codec_error");
      case "disconnect":
        return refuse(0, "DC", "downstream_remote_disconnect");
    }
  }
  return {
    ...known,
    res,
    method: req.method ?? "GET",
    target: normalized.target,
    body: read.body,
  };
}

/** Aborts when the client's connection or stream closes before its answer was written. */
export function downstreamGone(request: Pick<ProxiedRequest, "res">): AbortSignal {
  const gone = new AbortController();
  const { res } = request;
  if (res.destroyed && !responseCompleted(res)) gone.abort();
  res.once("close", () => {
    if (!responseCompleted(res)) gone.abort();
  });
  return gone.signal;
}

/** One header's value as a string (repeated ones joined), for matchers. */
export function headerOf(headers: Record<string, string | string[]>, name: string) {
  const value = headers[name];
  return Array.isArray(value) ? value.join(",") : value;
}
