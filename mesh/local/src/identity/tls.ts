import { createHash, X509Certificate } from "node:crypto";
import http2 from "node:http2";
import { isIPv6 } from "node:net";
import tls from "node:tls";
import type { WorkloadCertificate } from "./ca.js";
import { spiffeIdOfCertificate } from "./ca.js";

/**
 * The inbound side of ISTIO_MUTUAL: the workload's certificate, and every client must present
 * one the mesh CA signed. ALPN offers h2 first, as Envoy's inbound listener does.
 */
export function serverTlsOptions(cert: WorkloadCertificate): tls.TlsOptions {
  return {
    key: cert.keyPem,
    cert: cert.certPem,
    ca: cert.caPem,
    requestCert: true,
    rejectUnauthorized: true,
    ALPNProtocols: ["h2", "http/1.1"],
    minVersion: "TLSv1.2",
  };
}

/** The SPIFFE id (URI SAN) of the peer's certificate, if the handshake verified it. */
export function peerSpiffeId(socket: tls.TLSSocket): string | undefined {
  const der = verifiedPeerCertificate(socket);
  return der && spiffeIdOfCertificate(der);
}

/** Hex SHA-256 of the verified peer certificate's DER: the `Hash` Envoy puts in XFCC. */
export function peerCertificateHash(socket: tls.TLSSocket): string | undefined {
  const der = verifiedPeerCertificate(socket);
  return der && createHash("sha256").update(der).digest("hex");
}

/** The same hash of a certificate in PEM form (one this mesh issued). */
export function certificateHashOfPem(pem: string): string {
  return createHash("sha256").update(new X509Certificate(pem).raw).digest("hex");
}

function verifiedPeerCertificate(socket: tls.TLSSocket): Buffer | undefined {
  if (!socket.authorized) return undefined;
  const raw = socket.getPeerCertificate()?.raw;
  return raw && raw.length > 0 ? raw : undefined;
}

/**
 * Istio's principal for a SPIFFE id: the id without its scheme
 * ("spiffe://cluster.local/ns/shop/sa/order" → "cluster.local/ns/shop/sa/order"), the form
 * AuthorizationPolicy `principals` match.
 */
export function principalOf(spiffeId: string): string {
  if (!spiffeId.startsWith("spiffe://") || spiffeId.length === "spiffe://".length) {
    throw new Error(`"${spiffeId}" is not a SPIFFE id (spiffe://<trust domain>/...)`);
  }
  return spiffeId.slice("spiffe://".length);
}

/**
 * The namespace in an Istio principal ("cluster.local/ns/shop/sa/order" → "shop"), what
 * AuthorizationPolicy `namespaces` match; undefined when the principal has no /ns/<name>/sa/.
 */
export function namespaceOf(principal: string): string | undefined {
  return /^[^/]+\/ns\/([^/]+)\/sa\/[^/]+$/.exec(principal)?.[1];
}

export interface MutualTlsTarget {
  host: string;
  port: number;
  /** This workload's certificate, presented as the client certificate. */
  cert: WorkloadCertificate;
  /**
   * The identities the destination may have (Istio: the ServiceAccounts of the destination's
   * workloads); a server with any other SPIFFE id is refused. Unset: any id the CA signed.
   */
  expectedSpiffeIds?: string[];
  /** SNI; Istio sends outbound_.<port>_.<subset>_.<host>. Node refuses an IP address here. */
  servername?: string;
}

/** Raised (as the socket's error) when the server's certificate is not the identity expected. */
export class PeerIdentityError extends Error {
  readonly code = "ERR_MESH_PEER_IDENTITY";
  constructor(
    message: string,
    readonly spiffeId: string | undefined,
  ) {
    super(message);
    this.name = "PeerIdentityError";
  }
}

/**
 * The outbound side of ISTIO_MUTUAL: a TLS connection presenting this workload's certificate
 * that accepts only a server the mesh CA signed whose SPIFFE id is one of the expected ones.
 * Failures arrive as the socket's `error` event.
 */
export function connectMutualTls(target: MutualTlsTarget): tls.TLSSocket {
  const { host, port, cert, expectedSpiffeIds } = target;
  return tls.connect({
    host,
    port,
    servername: target.servername,
    key: cert.keyPem,
    cert: cert.certPem,
    ca: cert.caPem,
    rejectUnauthorized: true,
    ALPNProtocols: ["h2"],
    minVersion: "TLSv1.2",
    // Called only after the chain verified against the CA. Mesh certificates carry no DNS
    // names: the identity to check is the URI SAN, as Envoy's SAN matcher does.
    checkServerIdentity(_hostname, peer) {
      const spiffeId = peer.raw ? spiffeIdOfCertificate(peer.raw) : undefined;
      if (spiffeId === undefined) {
        return new PeerIdentityError(
          `the server at ${host}:${port} presented a certificate without a SPIFFE id (URI SAN)`,
          undefined,
        );
      }
      if (expectedSpiffeIds && !expectedSpiffeIds.includes(spiffeId)) {
        return new PeerIdentityError(
          `the server at ${host}:${port} is ${spiffeId}, not one of the expected identities (${expectedSpiffeIds.join(", ")})`,
          spiffeId,
        );
      }
      return undefined;
    },
  });
}

/**
 * An HTTP/2 session over connectMutualTls. Connection errors (refused, handshake, identity)
 * arrive as the session's `error` event.
 */
export function mutualTlsSession(
  target: MutualTlsTarget & { authority?: string },
  options: http2.SecureClientSessionOptions = {},
): http2.ClientHttp2Session {
  const host = isIPv6(target.host) ? `[${target.host}]` : target.host;
  return http2.connect(target.authority ?? `https://${host}:${target.port}`, {
    ...options,
    createConnection: () => connectMutualTls(target),
  });
}
