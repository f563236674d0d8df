import { setMaxListeners } from "node:events";
import http from "node:http";
import http2 from "node:http2";
import { type AddressInfo, createServer as createTcpServer, type Socket } from "node:net";
import type { ConnectRouter, Interceptor } from "@connectrpc/connect";
import { type ConnectNodeAdapterOptions, connectNodeAdapter } from "@connectrpc/connect-node";
import { getRequestListener } from "@hono/node-server";
import { contractsRegistry } from "@thinmesh/contracts/registry.js";

export interface OnePortServerOptions {
  /** Registers the Connect services (served as Connect, gRPC and gRPC-Web). */
  routes: (router: ConnectRouter) => void;
  interceptors: Interceptor[];
  /** Plain HTTP routes (a Hono app's fetch) for every path that is not an RPC. */
  fetch: (request: Request) => Response | Promise<Response>;
  /** Largest request message accepted; larger ones fail with resource_exhausted. */
  readMaxBytes: number;
}

export interface OnePortServer {
  listen(port: number, host: string): Promise<AddressInfo>;
  /**
   * Listens on a socket its parent process bound and passed as a file descriptor: a TCP port
   * (its address) or a Unix socket (its path, or null when the OS does not say).
   */
  listenOnFd(fd: number): Promise<AddressInfo | string | null>;
  /** Requests being handled right now. */
  inFlight(): number;
  /**
   * Stops accepting connections, lets in-flight requests finish for up to graceMs, then
   * closes every connection.
   */
  close(graceMs: number): Promise<void>;
}

// Every HTTP/2 connection without TLS (h2c, "prior knowledge") starts with this preface.
const h2Preface = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

/** Connect (Connect, gRPC, gRPC-Web) and a Hono app's routes on one dual-protocol port. */
export function createOnePortServer(options: OnePortServerOptions): OnePortServer {
  const shutdown = new AbortController();
  // Every in-flight request listens on this signal; that many listeners is expected.
  setMaxListeners(0, shutdown.signal);
  const rpcAndRoutes = connectNodeAdapter({
    routes: options.routes,
    interceptors: options.interceptors,
    readMaxBytes: options.readMaxBytes,
    // JSON clients (curl) send events' google.protobuf.Any payloads with an @type to resolve.
    jsonOptions: { registry: contractsRegistry },
    shutdownSignal: shutdown.signal,
    // Hono's listener accepts both HTTP/1.1 and HTTP/2 compat objects; only the typings differ.
    fallback: getRequestListener(options.fetch) as unknown as ConnectNodeAdapterOptions["fallback"],
  });
  const server = createDualProtocolServer(rpcAndRoutes as HttpHandler);
  return {
    listen: server.listen,
    listenOnFd: server.listenOnFd,
    inFlight: server.inFlight,
    close: (graceMs) => server.close(graceMs, () => shutdown.abort()),
  };
}

export type HttpHandler = (
  req: http.IncomingMessage | http2.Http2ServerRequest,
  res: http.ServerResponse | http2.Http2ServerResponse,
) => void;

export interface DualProtocolServer {
  listen(port: number, host: string): Promise<AddressInfo>;
  /**
   * Listens on a socket its parent process bound and passed as a file descriptor: a TCP port
   * (its address) or a Unix socket (its path, or null when the OS does not say).
   */
  listenOnFd(fd: number): Promise<AddressInfo | string | null>;
  /** Requests being handled right now. */
  inFlight(): number;
  /**
   * Stops accepting connections, lets in-flight requests finish for up to graceMs, then
   * closes every connection. onDrained runs between the two (e.g. to abort handlers).
   */
  close(graceMs: number, onDrained?: () => void): Promise<void>;
  /**
   * Serves a connection accepted elsewhere (mesh/local's inbound listener hands over its
   * plaintext and its decrypted TLS connections) as if this server had accepted it.
   */
  accept(socket: Socket): void;
}

/** Limits against clients that hold a connection without completing their requests. */
export interface ConnectionTimeouts {
  /**
   * A connection's request headers (HTTP/1.1), or its first bytes (before the protocol is
   * known), must arrive within this. Node's default is 60 s.
   */
  headersTimeoutMs?: number;
  /** A connection (HTTP/1.1) or session (h2) with no traffic either way is closed after this. */
  idleTimeoutMs?: number;
}

/**
 * One plaintext port for HTTP/1.1 and h2c. Node's http2 server only accepts HTTP/1.1 next to
 * HTTP/2 over TLS (ALPN), so a TCP server reads the first bytes of each connection and hands
 * the socket to an HTTP/1.1 or an HTTP/2 server. Used by the services and by mesh/local.
 */
export function createDualProtocolServer(
  handler: HttpHandler,
  timeouts: ConnectionTimeouts = {},
): DualProtocolServer {
  let inFlight = 0;
  let draining = false;
  let acceptsHandedSockets = false;
  const idleWaiters = new Set<() => void>();
  const handle = (
    req: http.IncomingMessage | http2.Http2ServerRequest,
    res: http.ServerResponse | http2.Http2ServerResponse,
  ) => {
    inFlight++;
    res.once("close", () => {
      inFlight--;
      if (inFlight === 0) for (const wake of idleWaiters) wake();
    });
    if (draining && req.httpVersionMajor === 1) res.setHeader("connection", "close");
    handler(req, res);
  };

  const { headersTimeoutMs, idleTimeoutMs } = timeouts;
  const h1 = http.createServer(
    {
      keepAliveTimeout: 65_000,
      requestTimeout: 0,
      ...(headersTimeoutMs && {
        headersTimeout: headersTimeoutMs,
        // Node checks the headers timeout on this interval (default 30 s, far beyond 10 s).
        connectionsCheckingInterval: Math.max(100, Math.min(30_000, headersTimeoutMs / 4)),
      }),
    },
    handle,
  );
  if (idleTimeoutMs) h1.setTimeout(idleTimeoutMs); // with no listener, Node destroys the socket
  const h2 = http2.createServer({}, handle);
  const sessions = new Set<http2.ServerHttp2Session>();
  h2.on("session", (session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
    if (idleTimeoutMs) session.setTimeout(idleTimeoutMs, () => session.destroy());
  });

  const sockets = new Set<Socket>();
  // http.Server would set these on the sockets it accepts; this server accepts them instead.
  // Without noDelay, Nagle's algorithm meets delayed ACKs and small responses wait ~40 ms.
  const tcp = createTcpServer({ noDelay: true, keepAlive: true }, (socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    // A client may reset the connection before the protocol is known; unhandled, that
    // ECONNRESET would end the process.
    socket.on("error", () => socket.destroy());
    const onSniffTimeout = () => socket.destroy();
    if (headersTimeoutMs) socket.setTimeout(headersTimeoutMs, onSniffTimeout);
    let head = Buffer.alloc(0);
    const sniff = (chunk: Buffer) => {
      head = Buffer.concat([head, chunk]);
      const n = Math.min(head.length, h2Preface.length);
      const looksLikeH2 = head.subarray(0, n).equals(h2Preface.subarray(0, n));
      if (looksLikeH2 && head.length < h2Preface.length) return; // need more bytes to decide
      socket.off("data", sniff);
      socket.setTimeout(0, onSniffTimeout); // from here the HTTP server's timeouts apply
      socket.pause();
      socket.unshift(head);
      (looksLikeH2 ? h2 : h1).emit("connection", socket);
      process.nextTick(() => socket.resume());
    };
    socket.on("data", sniff);
  });
  // The HTTP/1.1 server never listens itself; without this event it does not track its
  // connections, and closeIdleConnections() cannot find idle keep-alive sockets.
  tcp.on("listening", () => h1.emit("listening"));

  const listenOn = (target: { port: number; host: string } | { fd: number }) =>
    new Promise<AddressInfo | string | null>((resolve, reject) => {
      tcp.once("error", reject);
      tcp.listen(target, () => {
        tcp.off("error", reject);
        resolve(tcp.address());
      });
    });

  return {
    listen: async (port, host) => (await listenOn({ port, host })) as AddressInfo,
    listenOnFd: (fd) => listenOn({ fd }),
    inFlight: () => inFlight,
    async close(graceMs, onDrained) {
      draining = true;
      const tcpClosed = new Promise<void>((resolve) => tcp.close(() => resolve()));
      for (const session of sessions) session.close(); // GOAWAY: no new streams
      h1.closeIdleConnections();
      if (inFlight > 0) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(done, graceMs);
          function done() {
            clearTimeout(timer);
            idleWaiters.delete(done);
            resolve();
          }
          idleWaiters.add(done);
        });
      }
      onDrained?.();
      h1.closeAllConnections();
      h1.close(() => {}); // stops its connection-tracking timer
      for (const session of sessions) session.destroy();
      for (const socket of sockets) socket.destroy();
      await tcpClosed;
    },
    accept(socket) {
      // Connection tracking starts on "listening", which the TCP server may never emit here.
      if (!acceptsHandedSockets) {
        acceptsHandedSockets = true;
        h1.emit("listening");
      }
      tcp.emit("connection", socket);
    },
  };
}
