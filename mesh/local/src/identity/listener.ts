import type http from "node:http";
import type http2 from "node:http2";
import { type AddressInfo, createServer as createTcpServer, type Socket } from "node:net";
import tls from "node:tls";
import { createDualProtocolServer } from "@thinmesh/platform";
import type { WorkloadCertificate } from "./ca.js";
import { peerCertificateHash, peerSpiffeId, principalOf, serverTlsOptions } from "./tls.js";

/** PeerAuthentication's `mtls.mode` (UNSET resolves to the parent's mode before it gets here). */
export type PeerAuthenticationMode = "STRICT" | "PERMISSIVE" | "DISABLE";

/** Who is on the other end of the connection a request came in on. */
export interface InboundPeer {
  /** The verified client certificate's SPIFFE id; undefined over plaintext. */
  spiffeId?: string;
  /** Istio's principal form of spiffeId: cluster.local/ns/shop/sa/order. */
  principal?: string;
  tls: boolean;
  /** Hex SHA-256 of the client certificate's DER (XFCC's Hash). */
  certificateHash?: string;
}

export type InboundHandler = (
  req: http.IncomingMessage | http2.Http2ServerRequest,
  res: http.ServerResponse | http2.Http2ServerResponse,
  peer: InboundPeer,
) => void;

export interface RefusedConnection {
  /**
   * plaintext: a plaintext connection under STRICT; tls: a TLS connection under DISABLE (Istio
   * builds only TLS, or only raw_buffer, filter chains for these modes: Envoy finds no filter
   * chain and resets the connection before any HTTP). tls-handshake: the TLS handshake failed
   * (no client certificate, one from another CA, garbage after the ClientHello byte, ...).
   */
  reason: "plaintext" | "tls" | "tls-handshake";
  mode: PeerAuthenticationMode;
  remoteAddress: string | undefined;
  remotePort: number | undefined;
  /** What went wrong in the handshake, e.g. OpenSSL's "peer did not return a certificate". */
  detail?: string;
}

export interface InboundListenerOptions {
  /** Read for every new connection, so a PeerAuthentication edit applies to the next one. */
  mode(): PeerAuthenticationMode;
  /** Read for every new TLS connection, so a reissued certificate is used from then on. */
  certificate(): WorkloadCertificate;
  handler: InboundHandler;
  onRefused?(info: RefusedConnection): void;
}

/** Connections by outcome; Envoy's listener stats in brackets. */
export interface InboundListenerStats {
  /** Handshakes completed with a verified client certificate [ssl.handshake]. */
  mutualTls: number;
  /** Plaintext connections served (PERMISSIVE, DISABLE). */
  plaintext: number;
  /** Plaintext connections reset under STRICT [no_filter_chain_match]. */
  refusedPlaintext: number;
  /** TLS connections reset under DISABLE [no_filter_chain_match]. */
  refusedTls: number;
  /** TLS handshakes that failed [ssl.connection_error]. */
  failedHandshakes: number;
}

export interface InboundListener {
  listen(port: number, host: string): Promise<AddressInfo>;
  /** Requests being handled right now. */
  inFlight(): number;
  stats(): InboundListenerStats;
  /** Stops accepting, lets in-flight requests finish for up to graceMs, then closes everything. */
  close(graceMs: number): Promise<void>;
}

const tlsRecordTypeHandshake = 0x16; // the first byte of every TLS ClientHello
// Envoy's listener_filters_timeout default: a connection that says nothing is not kept forever.
const firstByteTimeoutMs = 15_000;
const handshakeTimeoutMs = 15_000;
// The peer of a TLS connection, looked up for each request on it. http2's compat request has
// a proxy for its socket that forwards property reads to the TLS socket, so a symbol works for
// both protocols where a WeakMap keyed by the socket would not.
const peerOfSocket = Symbol("thinmesh.inboundPeer");
type SocketWithPeer = Socket & { [peerOfSocket]?: InboundPeer };
const plaintextPeer: InboundPeer = Object.freeze({ tls: false });

/**
 * An inbound sidecar listener: one port that takes mutual TLS (the mesh's traffic) and, when
 * PeerAuthentication allows it, plaintext; both as HTTP/1.1 or HTTP/2. The first byte of each
 * connection tells TLS from plaintext, as Envoy's tls_inspector does.
 */
export function createInboundListener(options: InboundListenerOptions): InboundListener {
  const stats: InboundListenerStats = {
    mutualTls: 0,
    plaintext: 0,
    refusedPlaintext: 0,
    refusedTls: 0,
    failedHandshakes: 0,
  };
  const http = createDualProtocolServer((req, res) => {
    const peer = (req.socket as SocketWithPeer)[peerOfSocket] ?? plaintextPeer;
    options.handler(req, res, peer);
  });

  let activeCertificate = options.certificate();
  const tlsServer = tls.createServer({
    ...serverTlsOptions(activeCertificate),
    // Node verifies a client certificate only after the handshake, and with rejectUnauthorized
    // it drops an untrusted one without any event; checked here instead, so that every refusal
    // is counted and reported. (Envoy refuses during the handshake with a TLS alert, e.g.
    // unknown_ca; a refused client here sees its connection closed right after the handshake.)
    rejectUnauthorized: false,
    handshakeTimeout: handshakeTimeoutMs,
  });
  let closing = false;
  tlsServer.on("secureConnection", (socket: tls.TLSSocket) => {
    if (closing) {
      socket.destroy();
      return;
    }
    if (!socket.authorized) {
      refuseHandshake(socket, clientCertificateProblem(socket));
      return;
    }
    const spiffeId = peerSpiffeId(socket);
    const peer: InboundPeer = {
      tls: true,
      spiffeId,
      principal: spiffeId === undefined ? undefined : principalOf(spiffeId),
      certificateHash: peerCertificateHash(socket),
    };
    (socket as SocketWithPeer)[peerOfSocket] = peer;
    stats.mutualTls++;
    socket.on("error", () => {}); // resets after the handshake end the connection, nothing more
    http.accept(socket);
  });
  tlsServer.on("tlsClientError", (error, socket) => refuseHandshake(socket, error.message));
  function refuseHandshake(socket: tls.TLSSocket, detail: string) {
    stats.failedHandshakes++;
    options.onRefused?.({
      reason: "tls-handshake",
      mode: options.mode(),
      remoteAddress: socket.remoteAddress,
      remotePort: socket.remotePort,
      detail,
    });
    socket.destroy();
  }

  const connections = new Set<Socket>();
  const tcp = createTcpServer({ noDelay: true, keepAlive: true }, (socket) => {
    // A reset or a timeout at any stage ends this connection only.
    socket.on("error", () => {});
    connections.add(socket);
    socket.once("close", () => connections.delete(socket));
    socket.setTimeout(firstByteTimeoutMs, () => socket.destroy());
    const mode = options.mode();
    socket.once("data", (head: Buffer) => {
      if (closing) {
        socket.destroy();
        return;
      }
      socket.pause();
      socket.unshift(head);
      socket.setTimeout(0);
      const isTls = head[0] === tlsRecordTypeHandshake;
      if (isTls ? mode === "DISABLE" : mode === "STRICT") {
        stats[isTls ? "refusedTls" : "refusedPlaintext"]++;
        options.onRefused?.({
          reason: isTls ? "tls" : "plaintext",
          mode,
          remoteAddress: socket.remoteAddress,
          remotePort: socket.remotePort,
        });
        // A reset, not a close: what a client sees when Envoy finds no filter chain, e.g. a
        // plaintext curl against an Istio STRICT port ("Recv failure: Connection reset by
        // peer", exit code 56).
        socket.resetAndDestroy();
        return;
      }
      if (isTls) {
        const certificate = options.certificate();
        if (certificate !== activeCertificate) {
          activeCertificate = certificate;
          tlsServer.setSecureContext(serverTlsOptions(certificate));
        }
        tlsServer.emit("connection", socket);
        return;
      }
      stats.plaintext++;
      http.accept(socket);
      process.nextTick(() => socket.resume());
    });
  });

  return {
    listen(port, host) {
      return new Promise((resolve, reject) => {
        tcp.once("error", reject);
        tcp.listen(port, host, () => {
          tcp.off("error", reject);
          resolve(tcp.address() as AddressInfo);
        });
      });
    },
    inFlight: http.inFlight,
    stats: () => ({ ...stats }),
    async close(graceMs) {
      closing = true;
      const tcpClosed = new Promise<void>((resolve) => tcp.close(() => resolve()));
      await http.close(graceMs);
      // What is left was still in its first byte or its handshake: no request to wait for.
      for (const socket of connections) socket.destroy();
      await tcpClosed;
    },
  };
}

function clientCertificateProblem(socket: tls.TLSSocket): string {
  const presented = Object.keys(socket.getPeerCertificate() ?? {}).length > 0;
  if (!presented) return "the client presented no certificate (mutual TLS requires one)";
  return `the client certificate is not signed by the mesh CA (${socket.authorizationError})`;
}
