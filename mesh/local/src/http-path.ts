/**
 * Request-target normalisation, done once before routing and policy and never redone after:
 * what a proxy matches is exactly what it forwards.
 *
 * Istio's default (`meshConfig.pathNormalization: BASE`) is Envoy's `normalize_path`: RFC 3986
 * dot-segment removal, percent-encoded unreserved characters decoded (`%2e` → `.`, `%41` → `A`,
 * `%7E` → `~`), the hex digits of every other escape uppercased (`%3a` → `%3A`), and `\`
 * translated to `/`. This module does that and, where BASE would let an ambiguity through to
 * the application, it takes the stricter choice that Istio documents as the mitigation for
 * CVE-2021-31920:
 *
 * - `%2F`, `%2f`, `%5C`, `%5c` (escaped slash or backslash): refused, 400. Envoy's
 *   `path_with_escaped_slashes_action: REJECT_REQUEST`. BASE keeps them, so a route or policy
 *   on `/a/b` and an application that decodes `/a%2Fb` would disagree.
 * - `\`: translated to `/` before dot segments are removed, as BASE does (`/a\..\b` → `/b`).
 * - `//`: merged into one `/` (Istio's MERGE_SLASHES), so `//shop.x.v1.S/M` routes as
 *   `/shop.x.v1.S/M`.
 * - `..` that would climb above the root (`/..`, `/x/../../`): refused, 400, as Envoy's header
 *   validator does (RFC 3986 would silently drop it; a client that sends it is probing).
 * - `%00`: refused, 400 (Istio always rejects it). Other escapes of control characters stay
 *   escaped.
 * - Any other printable ASCII character that RFC 3986 does not allow in a path (`"<>^{|}[]` and
 *   `` ` ``) is percent-encoded, as Envoy's URL canonicaliser does.
 *
 * Refused because it is not an origin-form path at all (400 `Bad Request`, like Envoy): the
 * asterisk form `*`, absolute-form (`http://host/p`) and authority-form targets (this is not a
 * forward proxy), an empty target, a fragment (`#`, which a client never sends), control
 * characters, NUL, characters outside printable ASCII, and invalid escapes (`%`, `%4`, `%zz`).
 *
 * The query (from the first `?`) is forwarded untouched, apart from the same refusal of control
 * characters, non-ASCII and `#`. Decoding happens once: `%252e` stays `%252e` (an escaped `%`
 * followed by `2e`), never becomes `.`. The module is pure (a string in, a result out) so that every proxy hop can share it.
 */

export type NormalizedTarget =
  | {
      ok: true;
      /** The normalised path, what routes and policies match. */
      path: string;
      /** The query as received, with its leading `?`, or "". */
      query: string;
      /** path + query: exactly what is forwarded upstream. */
      target: string;
    }
  | { ok: false; reason: string };

const hex = "0123456789ABCDEF";
const isHexDigit = (code: number) =>
  (code >= 0x30 && code <= 0x39) ||
  (code >= 0x41 && code <= 0x46) ||
  (code >= 0x61 && code <= 0x66);
const isUnreserved = (code: number) =>
  (code >= 0x30 && code <= 0x39) ||
  (code >= 0x41 && code <= 0x5a) ||
  (code >= 0x61 && code <= 0x7a) ||
  code === 0x2d || // -
  code === 0x2e || // .
  code === 0x5f || // _
  code === 0x7e; // ~
// RFC 3986 pchar besides unreserved and escapes: sub-delims, ":" and "@"; plus "/" between segments.
const otherPathCharacters = new Set("!$&'()*+,;=:@/");

const refuse = (reason: string): NormalizedTarget => ({ ok: false, reason });
const percentEncode = (code: number) => `%${hex[code >> 4]}${hex[code & 15]}`;

/** Normalises a request target (`req.url` or h2 `:path`) or says why it is refused. */
export function normalizeRequestTarget(target: string): NormalizedTarget {
  if (target === "") return refuse("empty request target");
  if (target === "*") return refuse("asterisk-form request target (*) is not served here");
  if (!target.startsWith("/"))
    return refuse("request target must be a path starting with / (absolute-form is not served)");
  for (let i = 0; i < target.length; i++) {
    const code = target.charCodeAt(i);
    if (code < 0x20 || code === 0x7f) return refuse("control character in request target");
    if (code > 0x7e) return refuse("non-ASCII character in request target; percent-encode it");
    if (code === 0x23) return refuse("fragment (#) in request target");
  }
  const queryStart = target.indexOf("?");
  const rawPath = queryStart === -1 ? target : target.slice(0, queryStart);
  const query = queryStart === -1 ? "" : target.slice(queryStart);

  // Pass 1: escapes (decode unreserved, uppercase the rest) and characters.
  let decoded = "";
  for (let i = 0; i < rawPath.length; i++) {
    const char = rawPath[i]!;
    const code = rawPath.charCodeAt(i);
    if (char === "%") {
      const high = rawPath.charCodeAt(i + 1);
      const low = rawPath.charCodeAt(i + 2);
      if (!isHexDigit(high) || !isHexDigit(low))
        return refuse("invalid percent-encoding in path (% must be followed by two hex digits)");
      const value = Number.parseInt(rawPath.slice(i + 1, i + 3), 16);
      i += 2;
      if (value === 0) return refuse("%00 in path");
      if (value === 0x2f || value === 0x5c)
        return refuse("escaped slash or backslash (%2F, %5C) in path; send the path unescaped");
      decoded += isUnreserved(value) ? String.fromCharCode(value) : percentEncode(value);
    } else if (char === "\\") decoded += "/";
    else if (isUnreserved(code) || otherPathCharacters.has(char)) decoded += char;
    else decoded += percentEncode(code);
  }

  // Pass 2: merge slashes and remove dot segments (RFC 3986 section 5.2.4). A path that ends
  // in "/", "/." or "/.." keeps its trailing slash.
  const segments = decoded.slice(1).split("/");
  const kept: string[] = [];
  for (const [index, segment] of segments.entries()) {
    const last = index === segments.length - 1;
    if (segment === "..") {
      if (kept.length === 0) return refuse("path climbs above the root with ..");
      kept.pop();
    } else if (segment !== "." && segment !== "") kept.push(segment);
    if (last && (segment === "" || segment === "." || segment === "..")) kept.push("");
  }
  const path = `/${kept.join("/")}`;
  return { ok: true, path, query, target: path + query };
}
