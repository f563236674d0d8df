import { randomUUID } from "node:crypto";
import http from "node:http";
import http2 from "node:http2";
import { createDualProtocolServer, type DualProtocolServer, redactQuery } from "@thinmesh/platform";
import type { IngressConfig } from "./istio.js";
import { chooseRoute, workloadOf } from "./routing.js";

/** One request through the ingress, in the spirit of Envoy's access log. */
export interface Hop {
  time: string;
  source: "ingress";
  destination: string | undefined;
  route: string | undefined;
  method: string;
  path: string;
  protocol: string;
  status: number;
  /** Envoy's response flags: NR no route, UH no healthy upstream, UF upstream connection failure, URX retries exhausted. */
  flags: string;
  attempts: number;
  durationMs: number;
  requestId: string;
  traceparent: string | undefined;
}

export interface IngressOptions {
  config: IngressConfig;
  /** The base URL of a workload's instance, if it is running. */
  upstream(workload: string): string | undefined;
  onHop(hop: Hop): void;
}

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
// Istio retries connect failures twice by default (no retries block needed).
const defaultConnectRetries = 2;

function forwardable(headers: http.IncomingHttpHeaders): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || name.startsWith(":") || hopByHop.has(name)) continue;
    out[name] = value;
  }
  return out;
}

class UpstreamConnectError extends Error {}

/** A local stand-in for the Istio ingress gateway, routing by its Gateway and VirtualServices. */
export function createIngress(options: IngressOptions): DualProtocolServer {
  const sessions = new Map<string, http2.ClientHttp2Session>();
  const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });

  function h2Session(base: string) {
    let session = sessions.get(base);
    if (!session || session.closed || session.destroyed) {
      session = http2.connect(base);
      session.on("error", () => sessions.delete(base));
      session.on("close", () => sessions.delete(base));
      session.unref();
      sessions.set(base, session);
    }
    return session;
  }

  type Sink = http.ServerResponse | http2.Http2ServerResponse;

  function forwardH1(
    base: string,
    req: http.IncomingMessage | http2.Http2ServerRequest,
    headers: Record<string, string | string[]>,
    body: Buffer,
    res: Sink,
  ) {
    return new Promise<number>((resolve, reject) => {
      const upstream = http.request(
        new URL(req.url ?? "/", base),
        { method: req.method, headers, agent },
        (response) => {
          res.writeHead(response.statusCode ?? 502, forwardable(response.headers));
          response.pipe(res as http.ServerResponse);
          response.on("end", () => resolve(response.statusCode ?? 502));
          response.on("error", reject);
        },
      );
      upstream.on("error", (error: NodeJS.ErrnoException) =>
        reject(
          error.code === "ECONNREFUSED" || error.code === "ECONNRESET"
            ? new UpstreamConnectError(error.message)
            : error,
        ),
      );
      upstream.end(body);
    });
  }

  function forwardH2(
    base: string,
    req: http.IncomingMessage | http2.Http2ServerRequest,
    headers: Record<string, string | string[]>,
    body: Buffer,
    res: Sink,
  ) {
    return new Promise<number>((resolve, reject) => {
      const session = h2Session(base);
      const stream = session.request({
        ...headers,
        ":method": req.method ?? "POST",
        ":path": req.url ?? "/",
      });
      let responded = false;
      stream.on("response", (responseHeaders) => {
        responded = true;
        const status = Number(responseHeaders[":status"] ?? 502);
        res.writeHead(status, forwardable(responseHeaders as http.IncomingHttpHeaders));
        stream.on("trailers", (trailers) =>
          (res as http2.Http2ServerResponse).addTrailers(
            forwardable(trailers as http.IncomingHttpHeaders),
          ),
        );
        stream.pipe(res as unknown as NodeJS.WritableStream);
        stream.on("end", () => resolve(status));
      });
      stream.on("error", (error) =>
        responded ? reject(error) : reject(new UpstreamConnectError(error.message)),
      );
      stream.end(body);
    });
  }

  return createDualProtocolServer(async (req, res) => {
    const started = performance.now();
    const path = req.url ?? "/";
    const choice = chooseRoute(options.config.routes, {
      path,
      method: req.method ?? "GET",
      header: (name) => {
        const value = req.headers[name];
        return Array.isArray(value) ? value.join(",") : value;
      },
    });
    const headers = forwardable(req.headers);
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
      route: choice?.route.name,
      method: req.method ?? "",
      // The access record is logged: tokens in the query string must not be.
      path: redactQuery(path),
      protocol: `HTTP/${req.httpVersion}`,
      status: 0,
      flags: "-",
      attempts: 0,
      durationMs: 0,
      requestId,
      traceparent: headers.traceparent as string | undefined,
    };
    const finish = (status: number, flags = "-") => {
      hop.status = status;
      hop.flags = flags;
      hop.durationMs = Math.round((performance.now() - started) * 100) / 100;
      options.onHop(hop);
    };
    const fail = (status: number, flags: string, text: string) => {
      if (!res.headersSent) {
        res.writeHead(status, { "content-type": "text/plain", "x-request-id": requestId });
        res.end(text);
      } else res.destroy?.();
      finish(status, flags);
    };

    if (!choice) return fail(404, "NR", "");
    const workload = workloadOf(choice.host);
    hop.destination = workload ?? choice.host;
    const base = workload && options.upstream(workload);
    if (!base) return fail(503, "UH", "no healthy upstream");

    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const body = Buffer.concat(chunks); // buffered, as Envoy does, so that a retry can resend it
    const forward = req.httpVersionMajor === 2 ? forwardH2 : forwardH1;
    for (let attempt = 1; ; attempt++) {
      hop.attempts = attempt;
      try {
        finish(await forward(base, req, headers, body, res));
        return;
      } catch (error) {
        if (
          error instanceof UpstreamConnectError &&
          attempt <= defaultConnectRetries &&
          !res.headersSent
        )
          continue;
        const exhausted = error instanceof UpstreamConnectError;
        return fail(
          503,
          exhausted ? "UF,URX" : "UC",
          "upstream connect error or disconnect/reset before headers",
        );
      }
    }
  });
}
