// x-forwarded-client-cert as Envoy writes it. Istio's sidecar inbound HTTP connection manager
// uses forward_client_cert_details APPEND_FORWARD with set_current_client_cert_details
// {subject, uri, dns} (istio/istio pilot/pkg/networking/core, buildSidecarInboundHTTPOpts); its
// outbound listeners leave Envoy's default, SANITIZE. The parser lives in packages/platform,
// where the services read the caller's principal from the same header.
import type { XfccElement } from "@thinmesh/platform";
import type { InboundPeer } from "./listener.js";

export { parseXfcc, type XfccElement, xfccHeader } from "@thinmesh/platform";

/** Envoy's HttpConnectionManager.ForwardClientCertDetails. */
export type ForwardClientCertDetails =
  | "SANITIZE"
  | "FORWARD_ONLY"
  | "APPEND_FORWARD"
  | "SANITIZE_SET"
  | "ALWAYS_FORWARD_ONLY";

/**
 * Formats XFCC elements the way Envoy does: pairs in the order By, Hash, Cert, Chain, Subject,
 * URI, DNS; Subject, Cert and Chain always quoted (Subject even when empty), the others only
 * when they contain a separator.
 */
export function formatXfcc(elements: XfccElement[]): string {
  return elements
    .map((element) => {
      const pairs: string[] = [];
      if (element.by !== undefined) pairs.push(`By=${quoteIfNeeded(element.by)}`);
      if (element.hash !== undefined) pairs.push(`Hash=${quoteIfNeeded(element.hash)}`);
      if (element.cert !== undefined) pairs.push(`Cert=${quote(element.cert)}`);
      if (element.chain !== undefined) pairs.push(`Chain=${quote(element.chain)}`);
      if (element.subject !== undefined) pairs.push(`Subject=${quote(element.subject)}`);
      if (element.uri !== undefined) pairs.push(`URI=${quoteIfNeeded(element.uri)}`);
      for (const dns of element.dns ?? []) pairs.push(`DNS=${quoteIfNeeded(dns)}`);
      return pairs.join(";");
    })
    .join(",");
}

/**
 * The XFCC header an inbound sidecar passes to its app, from the one the client sent, the
 * connection's peer and the sidecar's own SPIFFE id; undefined means "remove the header". As
 * Envoy: any mode but ALWAYS_FORWARD_ONLY strips the client's header on a connection without a
 * verified client certificate, so a plaintext caller cannot forge an identity.
 */
export function forwardClientCert(
  incoming: string | undefined,
  peer: InboundPeer,
  localSpiffeId: string,
  mode: ForwardClientCertDetails = "APPEND_FORWARD",
): string | undefined {
  if (mode === "ALWAYS_FORWARD_ONLY") return incoming;
  if (mode === "SANITIZE" || !peer.tls || peer.certificateHash === undefined) return undefined;
  if (mode === "FORWARD_ONLY") return incoming;
  // Mesh certificates have an empty subject and no DNS SANs: Envoy writes Subject="" and no DNS.
  const current = formatXfcc([
    { by: localSpiffeId, hash: peer.certificateHash, subject: "", uri: peer.spiffeId ?? "" },
  ]);
  if (mode === "SANITIZE_SET" || !incoming) return current;
  return `${incoming},${current}`;
}

function quote(value: string): string {
  return `"${value.replace(/["\\]/g, "\\$&")}"`;
}

function quoteIfNeeded(value: string): string {
  return /[,;="\\]/.test(value) ? quote(value) : value;
}
