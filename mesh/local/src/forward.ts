import http from "node:http";
import http2 from "node:http2";

/**
 * What one proxy hop needs to carry one request: read the downstream body within bounds, and
 * forward it to an upstream over HTTP/1.1 or h2, reporting the outcome as data. Retries,
 * routing and access records are the caller's (the ingress, the sidecars).
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

export interface UpstreamRequest {
  method: string;
  /** The normalised path and query: sent exactly as given, never re-resolved. */
  target: string;
  headers: Record<string, string | string[]>;
  body: Buffer;
  /** h2 for gRPC and h2 clients (trailers kept), http/1.1 otherwise. */
  protocol: "http/1.1" | "h2";
}

/**
 * connect-failure: no connection to the upstream; refused-stream: the h2 upstream refused the
 * stream before processing it; reset: the upstream reset or closed before or during its
 * response; downstream-disconnect: the client went away first (the upstream is reset too).
 */
export type UpstreamFailure =
  | "connect-failure"
  | "refused-stream"
  | "reset"
  | "downstream-disconnect";

export type ForwardOutcome =
  | { ok: true; status: number }
  | {
      ok: false;
      failure: UpstreamFailure;
      /** Whether response headers went downstream already (then nothing can be retried). */
      responseStarted: boolean;
      status?: number;
      message: string;
    };

function downstreamAborted(res: DownstreamResponse) {
  if ("stream" in res) {
    const code = res.stream.rstCode;
    return code !== undefined && code !== http2.constants.NGHTTP2_NO_ERROR;
  }
  return !res.writableFinished;
}

const connectFailureCodes = new Set([
  "ECONNREFUSED",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ETIMEDOUT",
  "EADDRNOTAVAIL",
  "ENOTFOUND",
  "EAI_AGAIN",
]);
const isConnectFailure = (error: NodeJS.ErrnoException) =>
  connectFailureCodes.has(error.code ?? "") ||
  connectFailureCodes.has((error.cause as NodeJS.ErrnoException | undefined)?.code ?? "");

export interface Upstreams {
  /** Forwards one request to base (`http://host:port`) and relays the response into res. */
  forward(base: string, request: UpstreamRequest, res: DownstreamResponse): Promise<ForwardOutcome>;
  /** Closes pooled connections. */
  close(): void;
}

/** A connection pool per upstream: a keep-alive agent for HTTP/1.1, one session per h2 base. */
export function createUpstreams(): Upstreams {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
  const sessions = new Map<string, http2.ClientHttp2Session>();

  function h2Session(base: string) {
    let session = sessions.get(base);
    if (!session || session.closed || session.destroyed) {
      const created = http2.connect(base);
      created.on("error", () => sessions.delete(base));
      created.on("close", () => sessions.get(base) === created && sessions.delete(base));
      created.unref();
      sessions.set(base, created);
      session = created;
    }
    return session;
  }

  function forward(
    base: string,
    request: UpstreamRequest,
    res: DownstreamResponse,
  ): Promise<ForwardOutcome> {
    return new Promise((resolve) => {
      let settled = false;
      let status: number | undefined;
      let upstreamEnded = false;
      let abortUpstream = () => {};
      const settle = (outcome: ForwardOutcome) => {
        if (settled) return;
        settled = true;
        res.off("close", onDownstreamDone);
        res.off("finish", onDownstreamDone);
        if (!outcome.ok) {
          abortUpstream();
          if (outcome.responseStarted) res.destroy(); // a half-sent response cannot be mended
        }
        resolve(outcome);
      };
      const fail = (failure: UpstreamFailure, message: string) =>
        settle({ ok: false, failure, responseStarted: res.headersSent, status, message });
      // h2's compat response emits "finish" and "close" when its stream closes for any reason,
      // a client's RST_STREAM included; only the upstream's end and the stream's code tell.
      const onDownstreamDone = () =>
        upstreamEnded && !downstreamAborted(res)
          ? settle({ ok: true, status: status ?? 502 })
          : fail("downstream-disconnect", "the client went away");
      res.on("finish", onDownstreamDone);
      res.on("close", onDownstreamDone);

      const headers = { ...request.headers };
      if (request.body.length > 0 || headers["content-length"] !== undefined)
        headers["content-length"] = String(request.body.length);

      if (request.protocol === "h2") {
        let stream: http2.ClientHttp2Stream;
        try {
          // Node ends a GET's or HEAD's stream at once unless told otherwise (endStream).
          stream = h2Session(base).request(
            { ...headers, ":method": request.method, ":path": request.target },
            { endStream: request.body.length === 0 },
          );
        } catch (error) {
          // A session that is closing (GOAWAY) takes no new stream; nothing reached the app.
          return fail("refused-stream", (error as Error).message);
        }
        abortUpstream = () => stream.close(http2.constants.NGHTTP2_CANCEL);
        stream.on("response", (responseHeaders) => {
          status = Number(responseHeaders[":status"] ?? 502);
          res.writeHead(status, forwardableHeaders(responseHeaders));
          stream.on("trailers", (trailers) =>
            (res as http2.Http2ServerResponse).addTrailers(forwardableHeaders(trailers)),
          );
          stream.on("end", () => {
            upstreamEnded = true;
          });
          stream.pipe(res as unknown as NodeJS.WritableStream);
        });
        stream.on("error", (error: NodeJS.ErrnoException) => {
          if (isConnectFailure(error)) return fail("connect-failure", error.message);
          if (stream.rstCode === http2.constants.NGHTTP2_REFUSED_STREAM && status === undefined)
            return fail("refused-stream", error.message);
          fail("reset", error.message);
        });
        // A stream closed without an error (RST_STREAM NO_ERROR, GOAWAY) before a response or
        // before its end.
        stream.on("close", () => {
          if (status === undefined || !stream.readableEnded)
            fail("reset", "upstream closed the stream before its end");
        });
        if (request.body.length > 0) stream.end(request.body);
        return;
      }

      const { hostname, port, protocol } = new URL(base); // the base only: the path is ours
      const upstream = http.request({
        protocol,
        hostname,
        port,
        path: request.target,
        method: request.method,
        headers,
        agent,
      });
      abortUpstream = () => upstream.destroy();
      upstream.on("response", (response) => {
        status = response.statusCode ?? 502;
        res.writeHead(status, forwardableHeaders(response.headers));
        response.on("end", () => {
          upstreamEnded = true;
        });
        response.pipe(res as http.ServerResponse);
        response.on("error", (error) => fail("reset", error.message));
        response.on("aborted", () => fail("reset", "upstream closed the response before its end"));
      });
      upstream.on("error", (error: NodeJS.ErrnoException) =>
        fail(isConnectFailure(error) ? "connect-failure" : "reset", error.message),
      );
      upstream.end(request.body);
    });
  }

  return {
    forward,
    close() {
      agent.destroy();
      for (const session of sessions.values()) session.destroy();
      sessions.clear();
    },
  };
}
