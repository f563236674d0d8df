// The caller's mesh identity as Istio's inbound sidecar hands it to the app: the
// x-forwarded-client-cert (XFCC) header, one element per proxy that terminated mutual TLS.

/** One XFCC element (what one proxy appended); keys as Envoy writes them, lower-cased. */
export interface XfccElement {
  /** The SPIFFE id of the proxy that appended the element (its own certificate's URI SAN). */
  by?: string;
  /** Hex SHA-256 of the client certificate's DER. */
  hash?: string;
  /** The URL-encoded PEM client certificate. */
  cert?: string;
  /** The URL-encoded PEM client certificate chain. */
  chain?: string;
  /** The client certificate's subject (RFC 2253); "" for mesh certificates. */
  subject?: string;
  /** The client certificate's URI SAN: the caller's SPIFFE id. */
  uri?: string;
  /** The client certificate's DNS SANs (Envoy writes one DNS= pair per name). */
  dns?: string[];
}

export const xfccHeader = "x-forwarded-client-cert";

/**
 * Parses an XFCC header as Envoy documents it: elements separated by ",", key=value pairs by
 * ";", keys case-insensitive, a value containing , ; = or " double-quoted with \" for a quote.
 * Throws on a malformed header (a pair without "=", an unterminated quote).
 */
export function parseXfcc(header: string): XfccElement[] {
  const elements: XfccElement[] = [];
  for (const rawElement of splitOutsideQuotes(header, ",")) {
    if (rawElement.trim() === "") continue;
    const element: XfccElement = {};
    for (const rawPair of splitOutsideQuotes(rawElement, ";")) {
      if (rawPair.trim() === "") continue;
      const equals = rawPair.indexOf("=");
      if (equals <= 0) {
        throw new Error(`x-forwarded-client-cert: "${rawPair.trim()}" is not a key=value pair`);
      }
      const key = rawPair.slice(0, equals).trim().toLowerCase();
      const value = unquote(rawPair.slice(equals + 1).trim());
      switch (key) {
        case "by":
        case "hash":
        case "cert":
        case "chain":
        case "subject":
        case "uri":
          element[key] = value;
          break;
        case "dns":
          element.dns = [...(element.dns ?? []), value];
          break;
        default:
          break; // a key a newer proxy may add: not ours to reject
      }
    }
    elements.push(element);
  }
  return elements;
}

/** Who called, as this workload's inbound sidecar verified it; principals without spiffe://. */
export interface PeerIdentity {
  /** The immediate caller's principal, e.g. cluster.local/ns/shop/sa/order. */
  caller: string;
  /** This workload's own principal (the element's By), when the proxy wrote it. */
  self: string | undefined;
}

/**
 * The immediate caller's identity from the LAST XFCC element, the one this workload's inbound
 * sidecar appended after verifying the caller's certificate (earlier elements were written by
 * proxies further away). Undefined with no header, a malformed one, or no SPIFFE URI. Trust it
 * only behind a sidecar that sanitises XFCC on plaintext connections, as Istio's does.
 */
export function peerIdentity(headers: Headers): PeerIdentity | undefined {
  const header = headers.get(xfccHeader);
  if (!header) return undefined;
  let elements: XfccElement[];
  try {
    elements = parseXfcc(header);
  } catch {
    return undefined;
  }
  const last = elements.at(-1);
  const caller = principalOf(last?.uri);
  return caller ? { caller, self: principalOf(last?.by) } : undefined;
}

/** The Istio principal (cluster.local/ns/shop/sa/order) of the immediate caller. */
export function callerPrincipal(headers: Headers): string | undefined {
  return peerIdentity(headers)?.caller;
}

function principalOf(spiffeId: string | undefined) {
  if (!spiffeId?.startsWith("spiffe://") || spiffeId.length === "spiffe://".length) {
    return undefined;
  }
  return spiffeId.slice("spiffe://".length);
}

function splitOutsideQuotes(text: string, separator: string): string[] {
  const parts: string[] = [];
  let start = 0;
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const char = text[i];
    if (quoted && char === "\\") {
      i++; // the escaped character cannot end the quote
    } else if (char === '"') {
      quoted = !quoted;
    } else if (!quoted && char === separator) {
      parts.push(text.slice(start, i));
      start = i + 1;
    }
  }
  if (quoted) throw new Error(`x-forwarded-client-cert: unterminated quote in ${text}`);
  parts.push(text.slice(start));
  return parts;
}

function unquote(value: string): string {
  if (!value.startsWith('"')) return value;
  let text = "";
  for (let i = 1; i < value.length; i++) {
    const char = value[i];
    if (char === "\\") {
      text += value[++i] ?? "";
    } else if (char === '"') {
      if (i !== value.length - 1) {
        throw new Error(`x-forwarded-client-cert: ${value} has text after its closing quote`);
      }
      return text;
    } else {
      text += char;
    }
  }
  throw new Error(`x-forwarded-client-cert: unterminated quote in ${value}`);
}
