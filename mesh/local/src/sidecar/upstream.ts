import { randomUUID } from "node:crypto";
import type http from "node:http";
import http2 from "node:http2";
import { forwardableHeaders, responseCompleted } from "../forward.js";

/**
 * One request to an upstream over an HTTP/2 session (mTLS to another proxy's inbound side, or
 * h2c to the app), reporting what happened as data, in Envoy's terms, so that the caller can
 * apply retry and outlier-detection rules: a response (its headers; the body still to be
 * read) or one of Envoy's local failures.
 */
export type UpstreamResult =
  | {
      kind: "response";
      status: number;
      headers: http2.IncomingHttpHeaders;
      stream: http2.ClientHttp2Stream;
      /** The headers ended the stream: a trailers-only answer (a gRPC status, no body). */
      endStream: boolean;
    }
  | {
      /**
       * connect-failure: the connection never came up; reset: the session (connection) ended
       * under the stream, Envoy's connection termination; remote-reset: the upstream reset this
       * one stream (RST_STREAM), refused-stream: with REFUSED_STREAM (or GOAWAY'd).
       */
      kind: "connect-failure" | "reset" | "remote-reset" | "refused-stream";
      /** Node's error text (for debugging). */
      reason: string;
      /** Envoy's reset reason (Http::Utility::resetReasonToString), for the local reply. */
      resetReason: ResetReason;
      /** Envoy's transport failure reason, when it has one (a refused connect). */
      transportFailure?: string;
    }
  | { kind: "timeout" };

export type ResetReason =
  | "remote connection failure"
  | "connection timeout"
  | "connection termination"
  | "remote reset"
  | "remote refused stream reset"
  | "overflow";

/** The error raised by SessionPool when tcp.connectTimeout passes before the connection is up. */
export const CONNECT_TIMEOUT = "connect timeout";

// strerror(3) texts Envoy's ConnectionImpl puts after "delayed connect error: ".
const CONNECT_ERRORS: Record<string, string> = {
  ECONNREFUSED: "Connection refused",
  ECONNRESET: "Connection reset by peer",
  EHOSTUNREACH: "No route to host",
  ENETUNREACH: "Network is unreachable",
  ETIMEDOUT: "Connection timed out",
};

function connectFailure(raised: Error): UpstreamResult {
  // A stream pending on a session that failed to connect is cancelled with the session's error
  // as its cause.
  const error = raised.cause instanceof Error ? raised.cause : raised;
  if (error.message === CONNECT_TIMEOUT) {
    return { kind: "connect-failure", reason: error.message, resetReason: "connection timeout" };
  }
  const code = (error as NodeJS.ErrnoException).code;
  const text = code ? CONNECT_ERRORS[code] : undefined;
  return {
    kind: "connect-failure",
    reason: error.message,
    resetReason: "remote connection failure",
    ...(text && { transportFailure: `delayed connect error: ${text}` }),
  };
}

/**
 * Envoy's local reply for a request that got no response headers (Router::onUpstreamReset):
 * body, response_code_details and the response flag of the reset reason.
 */
export function upstreamResetReply(
  resetReason: ResetReason,
  retried: boolean,
  transportFailure?: string,
) {
  const tfr = transportFailure ?? "";
  return {
    body:
      "upstream connect error or disconnect/reset before headers. " +
      (retried ? "retried and the latest " : "") +
      `reset reason: ${resetReason}` +
      (tfr ? `, transport failure reason: ${tfr}` : ""),
    details:
      `upstream_reset_before_response_started{${resetReason}${tfr ? `|${tfr}` : ""}}`.replace(
        /\s/g,
        "_",
      ),
    // Router::streamResetReasonToResponseFlag.
    flag:
      resetReason === "overflow"
        ? "UO"
        : resetReason === "connection termination"
          ? "UC"
          : resetReason === "remote reset" || resetReason === "remote refused stream reset"
            ? "UR"
            : "UF",
  };
}

export interface UpstreamRequest {
  method: string;
  path: string;
  authority: string;
  headers: Record<string, string | string[]>;
  body: Buffer;
  /** Gives up after this long without response headers (Envoy's per-try timeout). */
  timeoutMs?: number;
  /** Aborts the attempt (the route timeout, or the downstream went away). */
  signal?: AbortSignal;
  /**
   * Called once the stream is on an established connection (Envoy's onPoolReady, which tells
   * outlier detection LocalOriginConnectSuccess); not for a connection that failed.
   */
  onPoolReady?: () => void;
}

export function sendUpstream(
  session: http2.ClientHttp2Session,
  request: UpstreamRequest,
): Promise<UpstreamResult> {
  return new Promise((resolve) => {
    // A client already gone (or a deadline passed) sends nothing upstream: a listener added to an
    // aborted signal would never fire.
    if (request.signal?.aborted) return resolve({ kind: "timeout" });
    let settled = false;
    let timer: NodeJS.Timeout | undefined;
    const settle = (result: UpstreamResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      request.signal?.removeEventListener("abort", onAbort);
      session.off("error", onSessionError);
      resolve(result);
    };
    const onSessionError = (error: Error) =>
      settle(
        session.connecting
          ? connectFailure(error)
          : { kind: "reset", reason: error.message, resetReason: "connection termination" },
      );
    if (session.destroyed || session.closed) {
      settle({
        kind: "connect-failure",
        reason: "connection closed",
        resetReason: "remote connection failure",
      });
      return;
    }
    session.once("error", onSessionError);
    let stream: http2.ClientHttp2Stream;
    try {
      stream = session.request(
        {
          ...request.headers,
          ":method": request.method,
          ":path": request.path,
          ":authority": request.authority,
        },
        { endStream: false },
      );
    } catch (error) {
      settle(connectFailure(error as Error));
      return;
    }
    if (request.onPoolReady) {
      const ready = request.onPoolReady;
      if (!session.connecting) ready();
      else session.once("connect", () => !settled && ready());
    }
    if (request.timeoutMs !== undefined) {
      timer = setTimeout(() => {
        stream.close(http2.constants.NGHTTP2_CANCEL);
        settle({ kind: "timeout" });
      }, request.timeoutMs);
    }
    const onAbort = () => {
      stream.close(http2.constants.NGHTTP2_CANCEL);
      settle({ kind: "timeout" });
    };
    request.signal?.addEventListener("abort", onAbort, { once: true });
    stream.on("response", (headers, flags) =>
      settle({
        kind: "response",
        status: Number(headers[":status"] ?? 502),
        headers,
        stream,
        endStream: (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0,
      }),
    );
    // A stream reset by the upstream ends that stream only (RFC 9113 §5.4.2); one whose
    // session went away ended with the connection. Node raises ERR_HTTP2_STREAM_ERROR for any
    // RST_STREAM code, so the code tells refused from other resets.
    const streamEnded = (error: Error): UpstreamResult => {
      const reason = error.message;
      if (session.connecting) return connectFailure(error);
      if (stream.rstCode === http2.constants.NGHTTP2_REFUSED_STREAM)
        return { kind: "refused-stream", reason, resetReason: "remote refused stream reset" };
      if (session.destroyed || session.closed)
        return { kind: "reset", reason, resetReason: "connection termination" };
      return { kind: "remote-reset", reason, resetReason: "remote reset" };
    };
    stream.on("error", (error: Error) => settle(streamEnded(error)));
    stream.on("close", () => {
      if (!settled)
        settle(streamEnded(new Error(`stream closed before headers (code ${stream.rstCode})`)));
    });
    stream.end(request.body);
  });
}

/** The connectionPool settings a SessionPool applies to the connections it opens. */
export interface SessionLimits {
  /** tcp.connectTimeout: a connection not up by then fails (connect failure). */
  connectTimeoutMs: number;
  /** http.idleTimeout: closed after that long without a request or response in progress. */
  idleTimeoutMs: number;
  /** http.maxRequestsPerConnection: drained after that many requests; 0 is no limit. */
  maxRequestsPerConnection?: number;
}

/** Keeps one HTTP/2 session per upstream address, reconnecting when one closes. */
export class SessionPool {
  readonly #sessions = new Map<string, http2.ClientHttp2Session>();
  readonly #requests = new WeakMap<http2.ClientHttp2Session, number>();
  constructor(private readonly connect: (key: string) => http2.ClientHttp2Session) {}

  /**
   * The session for one more request to one upstream. limits are the cluster's
   * connectionPool settings: connectTimeout and idleTimeout apply to a new session; a session
   * that has carried maxRequestsPerConnection requests is drained (its requests in progress
   * finish, GOAWAY) and the next request opens a new one, as Envoy does.
   */
  get(key: string, limits?: SessionLimits): http2.ClientHttp2Session {
    let session = this.#sessions.get(key);
    const perConnection = limits?.maxRequestsPerConnection ?? 0;
    if (session && perConnection > 0 && (this.#requests.get(session) ?? 0) >= perConnection) {
      this.#sessions.delete(key);
      // close() before the requests queued on a connecting session were sent refuses them:
      // Node sends them once connected, within that turn.
      const drained = session;
      if (drained.connecting) drained.once("connect", () => setImmediate(() => drained.close()));
      else drained.close();
      session = undefined;
    }
    if (!session || session.closed || session.destroyed) {
      const created = this.connect(key);
      if (limits) {
        const connecting = setTimeout(() => {
          if (created.connecting) created.destroy(new Error(CONNECT_TIMEOUT));
        }, limits.connectTimeoutMs);
        connecting.unref();
        created.once("connect", () => clearTimeout(connecting));
        created.once("close", () => clearTimeout(connecting));
        if (limits.idleTimeoutMs > 0)
          created.setTimeout(limits.idleTimeoutMs, () => created.close());
      }
      // Each request in flight listens for the session's error (sendUpstream).
      created.setMaxListeners(0);
      created.on("error", () => {});
      created.once("close", () => {
        if (this.#sessions.get(key) === created) this.#sessions.delete(key);
      });
      created.unref();
      this.#sessions.set(key, created);
      session = created;
    }
    this.#requests.set(session, (this.#requests.get(session) ?? 0) + 1);
    return session;
  }

  /** Closes the session to one upstream (e.g. it was ejected or it went away). */
  drop(key: string) {
    this.#sessions.get(key)?.destroy();
    this.#sessions.delete(key);
  }

  close() {
    for (const session of this.#sessions.values()) session.destroy();
    this.#sessions.clear();
  }
}

/** How a relayed response ended: whole, cut by the upstream, or abandoned by the client. */
export type RelayEnding = "complete" | "upstream-reset" | "downstream-gone";

/** Envoy's response flags for each ending: UC upstream connection termination, DC downstream. */
export const relayEndFlags: Record<RelayEnding, string[]> = {
  complete: [],
  "upstream-reset": ["UC"],
  "downstream-gone": ["DC"],
};

/**
 * Streams an accepted upstream response to the downstream client: status, headers, body and,
 * to an HTTP/2 client, trailers (gRPC's status). done reports, once, the body's size, the gRPC
 * status and how the response ended.
 */
export function relayResponse(
  req: http.IncomingMessage | http2.Http2ServerRequest,
  res: http.ServerResponse | http2.Http2ServerResponse,
  result: Extract<UpstreamResult, { kind: "response" }>,
  done: (bytes: number, grpcStatus: string | null, ending: RelayEnding) => void,
) {
  let finished = false;
  let bytes = 0;
  let grpcStatus = (result.headers["grpc-status"] as string | undefined) ?? null;
  const finish = (ending: RelayEnding) => {
    if (finished) return;
    finished = true;
    done(bytes, grpcStatus, ending);
  };
  if (result.endStream && req.httpVersionMajor === 2) {
    // A trailers-only answer stays one (gRPC clients read the status from these headers).
    const { stream } = res as http2.Http2ServerResponse;
    if (stream.destroyed || stream.closed) {
      finish("downstream-gone");
      return;
    }
    stream.respond(
      { ":status": result.status, ...forwardableHeaders(result.headers) },
      { endStream: true },
    );
    stream.once("close", () =>
      finish(stream.rstCode === http2.constants.NGHTTP2_NO_ERROR ? "complete" : "downstream-gone"),
    );
    return;
  }
  res.writeHead(result.status, forwardableHeaders(result.headers));
  result.stream.on("data", (chunk: Buffer) => {
    bytes += chunk.length;
  });
  result.stream.on("trailers", (trailers) => {
    grpcStatus = (trailers["grpc-status"] as string | undefined) ?? grpcStatus;
    if (req.httpVersionMajor === 2) {
      (res as http2.Http2ServerResponse).addTrailers(forwardableHeaders(trailers));
    }
  });
  // pipe() keeps to the slower side's pace. The response ends only once the upstream stream
  // closed cleanly: Node ends the readable side on a reset too (a dropped connection, a
  // RST_STREAM), and the client must not take a truncated body for a whole one.
  result.stream.pipe(res as unknown as NodeJS.WritableStream, { end: false });
  const upstreamCut = () => {
    if (finished) return;
    res.destroy();
    finish("upstream-reset");
  };
  result.stream.on("error", upstreamCut);
  result.stream.on("close", () => {
    const clean =
      result.stream.readableEnded && result.stream.rstCode === http2.constants.NGHTTP2_NO_ERROR;
    if (clean) res.end();
    else upstreamCut();
  });
  res.on("close", () => {
    if (responseCompleted(res)) return finish("complete");
    if (!result.stream.closed) result.stream.close(http2.constants.NGHTTP2_CANCEL);
    finish("downstream-gone");
  });
}

/** The request's x-request-id, generated when the client sent none (as Envoy does). */
export function newRequestId(headers: Record<string, string | string[]>): string {
  const existing = headers["x-request-id"];
  const id = typeof existing === "string" && existing ? existing : randomUUID();
  headers["x-request-id"] = id;
  return id;
}
