import type http from "node:http";
import http2 from "node:http2";

/**
 * What every proxy hop (the ingress, the sidecars) needs of its downstream side: the request's
 * body read within bounds, the headers that may travel on, and whether a response went out
 * whole.
 */

export type DownstreamRequest = http.IncomingMessage | http2.Http2ServerRequest;
export type DownstreamResponse = http.ServerResponse | http2.Http2ServerResponse;

// Hop-by-hop and HTTP/2 connection-specific headers a proxy must not forward.
const hopByHop = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "transfer-encoding",
  "upgrade",
  "host",
  "http2-settings",
]);

export function forwardableHeaders(
  headers: http.IncomingHttpHeaders | http2.IncomingHttpHeaders,
): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || name.startsWith(":") || hopByHop.has(name)) continue;
    out[name] = value;
  }
  return out;
}

/**
 * The request's authority as the client sent it (`:authority` over HTTP/2, `Host` over HTTP/1),
 * which forwardableHeaders drops: Istio's hosts and `request.headers[:authority]` match it.
 */
export function authorityOf(req: DownstreamRequest): string | undefined {
  const value = req.headers[":authority"] ?? req.headers.host;
  return typeof value === "string" ? value : undefined;
}

/**
 * Envoy's per-connection buffer limit in Istio is 1 MiB; a request body must fit in it to be
 * buffered for retries. Larger bodies are refused with 413 before they are read.
 */
export const defaultMaxRequestBytes = 1024 * 1024;

export type BodyResult =
  | { ok: true; body: Buffer }
  /**
   * too-large: beyond maxBytes (declared or streamed); timeout: the body did not arrive within
   * timeoutMs; disconnect: the client went away; malformed: the HTTP/1.1 parser refused the
   * body (an invalid chunk size, …) and has already answered 400.
   */
  | { ok: false; problem: "too-large" | "timeout" | "disconnect" | "malformed"; received: number };

/**
 * Reads a request body into one buffer, as Envoy buffers a body it may have to retry, but never
 * more than maxBytes: a declared Content-Length beyond it is refused before reading, a streamed
 * body as soon as it crosses it. Never throws; the request is left unread on refusal (the caller
 * answers and closes the connection).
 */
export function readRequestBody(
  req: DownstreamRequest,
  limits: { maxBytes: number; timeoutMs: number },
): Promise<BodyResult> {
  const declared = Number(req.headers["content-length"]);
  if (Number.isFinite(declared) && declared > limits.maxBytes)
    return Promise.resolve({ ok: false, problem: "too-large", received: 0 });
  if (req.readableEnded) return Promise.resolve({ ok: true, body: Buffer.alloc(0) });
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let received = 0;
    const settle = (result: BodyResult) => {
      clearTimeout(timer);
      req.off("data", onData);
      req.off("end", onEnd);
      req.off("error", onError);
      req.off("close", onClose);
      req.off("aborted", onError);
      if (!result.ok) req.pause();
      resolve(result);
    };
    const onData = (chunk: Buffer) => {
      received += chunk.length;
      if (received > limits.maxBytes) return settle({ ok: false, problem: "too-large", received });
      chunks.push(chunk);
    };
    const onEnd = () => settle({ ok: true, body: Buffer.concat(chunks, received) });
    const onError = () => settle({ ok: false, problem: failureOf(req), received });
    const onClose = () => {
      if (!req.readableEnded) settle({ ok: false, problem: failureOf(req), received });
    };
    const timer = setTimeout(
      () => settle({ ok: false, problem: "timeout", received }),
      limits.timeoutMs,
    );
    req.on("data", onData);
    req.on("end", onEnd);
    req.on("error", onError);
    req.on("close", onClose);
    // A client's h2 RST_STREAM: "aborted" comes first, then an "end" as if the body were whole.
    req.on("aborted", onError);
  });
}

// Node's HTTP/1.1 parser records why it gave up on the socket: a client that closed mid-body
// ends with HPE_INVALID_EOF_STATE, a bad chunk with another HPE_ code (answered 400 by Node).
function failureOf(req: DownstreamRequest): "disconnect" | "malformed" {
  const code = (req.socket as { errored?: NodeJS.ErrnoException | null } | undefined)?.errored
    ?.code;
  return code?.startsWith("HPE_") && code !== "HPE_INVALID_EOF_STATE" ? "malformed" : "disconnect";
}

/**
 * Whether a response was sent whole. Over HTTP/2 Node's compatibility response emits "finish"
 * and reports writableFinished even for a stream the client reset, so its writableEnded (end()
 * was called) and the stream's reset code decide there.
 */
export function responseCompleted(res: DownstreamResponse): boolean {
  if ("stream" in res) {
    return res.writableEnded && (res.stream.rstCode ?? http2.constants.NGHTTP2_NO_ERROR) === 0;
  }
  return res.writableFinished;
}
