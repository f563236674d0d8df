/**
 * RequestAuthentication as Istio configures Envoy's jwt_authn filter: one provider per jwtRule,
 * a requirement of "any provider, or no token at all" (allow_missing). So: no token passes with
 * no identity (an AuthorizationPolicy's requestPrincipals then refuses it); a token present but
 * invalid is answered 401 with jwt_verify_lib's message (Envoy's body). Tokens are read from
 * the rule's fromHeaders / fromParams, by default from `Authorization: Bearer …` and the
 * `access_token` query parameter. Checks in jwt_verify_lib's order: form and field types
 * (parseFromString), issuer (one whose rule names the location the token came from), time
 * (exp, nbf, 60 s clock skew, Envoy's default), audiences (when the rule lists any; a mismatch
 * is Envoy's 403, not 401), then the signature (jose) with each JWKS key whose kid/alg fit. The principal is "<iss>/<sub>"; the claims handed on are Envoy's payload
 * metadata, with `scope` and `permission` split on spaces (Istio's spaceDelimitedClaims
 * default). forwardOriginalToken false (Istio's default) removes the verified token from where
 * it was found (its header, or its query parameter) before the app.
 * JWKS: fetched through the caller's fetchJwks and cached 5 min (Envoy's remote_jwks default),
 * refreshed early on an unknown kid at most every 30 s (Envoy waits for the cache to expire: a
 * listed difference). A signature once verified is remembered
 * for the token and the JWKS key that verified it (Envoy's jwt_cache_config, which Istio leaves
 * off; here a signature check costs a crypto round trip on Node's thread pool per request): the
 * form, issuer, time and audience checks still run on every request, and a key that leaves the
 * JWKS (a refetch) makes its tokens verified afresh. Not implemented (refused at load):
 * fromCookies, outputPayloadToHeader, outputClaimToHeaders, OpenID discovery without jwksUri.
 */
import {
  compactVerify,
  importJWK,
  type JSONWebKeySet,
  type JWK,
  type JWTPayload,
  type ProtectedHeaderParameters,
} from "jose";
import type { Workload } from "./authz.js";
import type { JwtRule, MeshConfig } from "./config.js";

/** Where a token was read: a header (removed whole) or a query parameter. */
export type TokenLocation = { header: string } | { param: string };

export type JwtResult =
  | {
      ok: true;
      principal?: string;
      claims?: Record<string, unknown>;
      /** The locations of verified tokens whose rule does not forward them (Envoy's removeJwt). */
      remove: TokenLocation[];
    }
  | { ok: false; status: 401 | 403; body: string; headers: Record<string, string> };

export interface TokenSource {
  header(name: string): string | undefined;
  query: URLSearchParams;
  /** Envoy's buildOriginalUri(headers, 256) for the challenge's realm: scheme://host/path?query. */
  uri?: string;
}

/** jwt_verify_lib's messages (status.cc), as Envoy answers them. */
export const JWT_MESSAGES = {
  badFormat: "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
  headerBase64: "Jwt header is an invalid Base64url encoded",
  headerParse: "Jwt header is an invalid JSON",
  headerAlg: "Jwt header [alg] field is required and must be a string",
  headerAlgNotImplemented: "Jwt header [alg] is not supported",
  headerKid: "Jwt header [kid] field is not a string",
  payloadBase64: "Jwt payload is an invalid Base64url encoded",
  payloadParse: "Jwt payload is an invalid JSON",
  issNotString: "Jwt payload [iss] field is not a string",
  subNotString: "Jwt payload [sub] field is not a string",
  iatNotInteger: "Jwt payload [iat] field is not an integer",
  iatOutOfRange: "Jwt payload [iat] field is not a positive 64 bit integer",
  nbfNotInteger: "Jwt payload [nbf] field is not an integer",
  nbfOutOfRange: "Jwt payload [nbf] field is not a positive 64 bit integer",
  expNotInteger: "Jwt payload [exp] field is not an integer",
  expOutOfRange: "Jwt payload [exp] field is not a positive 64 bit integer",
  jtiNotString: "Jwt payload [jti] field is not a string",
  audNotString: "Jwt payload [aud] field is not a string or string list",
  signatureBase64: "Jwt signature is an invalid Base64url encoded",
  unknownIssuer: "Jwt issuer is not configured",
  expired: "Jwt is expired",
  notYetValid: "Jwt not yet valid",
  audience: "Audiences in Jwt are not allowed",
  kidAlg: "Jwks doesn't have key to match kid or alg from Jwt",
  verification: "Jwt verification fails",
  fetch: "Jwks remote fetch is failed",
} as const;

const CLOCK_SKEW_S = 60;
const JWKS_CACHE_MS = 5 * 60_000;
const UNKNOWN_KID_REFRESH_MS = 30_000;
/** Tokens whose signature is remembered; the oldest is forgotten first. */
const VERIFIED_TOKENS_KEPT = 1000;

interface Location {
  header?: { name: string; prefix: string };
  param?: string;
}

function locationsOf(rule: JwtRule): Location[] {
  if (!rule.fromHeaders && !rule.fromParams) {
    return [{ header: { name: "authorization", prefix: "Bearer " } }, { param: "access_token" }];
  }
  return [
    ...(rule.fromHeaders ?? []).map((h) => ({
      header: { name: h.name.toLowerCase(), prefix: h.prefix ?? "" },
    })),
    ...(rule.fromParams ?? []).map((param) => ({ param })),
  ];
}

/**
 * Envoy's extractor: the prefix is found case-sensitively anywhere in the value; the token
 * starts at the first base64url-or-dot character after it and runs to the end; with none,
 * the whole value is the token (so `Bearer ` alone fails as a malformed token).
 */
function extract(location: Location, source: TokenSource): string | undefined {
  if (location.param) return source.query.get(location.param) ?? undefined;
  const { name, prefix } = location.header!;
  const value = source.header(name);
  if (value === undefined || !prefix) return value;
  const at = value.indexOf(prefix);
  if (at < 0) return undefined;
  const rest = value.slice(at + prefix.length);
  const start = rest.search(/[A-Za-z0-9_.-]/);
  return start < 0 ? value : rest.slice(start);
}

const locationOf = (location: Location): TokenLocation =>
  location.param ? { param: location.param } : { header: location.header!.name };

// jwt_verify_lib's isImplemented.
const IMPLEMENTED_ALGS = new Set([
  "ES256",
  "ES384",
  "ES512",
  "HS256",
  "HS384",
  "HS512",
  "RS256",
  "RS384",
  "RS512",
  "PS256",
  "PS384",
  "PS512",
  "EdDSA",
]);

/** absl::WebSafeBase64Unescape: base64url, padding optional. */
function base64url(section: string): Buffer | undefined {
  const bare = section.replace(/={1,2}$/, "");
  if (!/^[A-Za-z0-9_-]*$/.test(bare) || bare.length % 4 === 1) return undefined;
  return Buffer.from(bare, "base64url");
}

function jsonObject(bytes: Buffer): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(bytes.toString("utf8"));
    return typeof value === "object" && value !== null && !Array.isArray(value)
      ? (value as Record<string, unknown>)
      : undefined;
  } catch {
    return undefined;
  }
}

/** jwt_verify_lib's StructUtils::GetUInt64: a number, truncated; negative is out of range. */
function uint64(
  payload: Record<string, unknown>,
  name: "iat" | "nbf" | "exp",
): number | "not-integer" | "out-of-range" | undefined {
  const value = payload[name];
  if (value === undefined) return undefined;
  if (typeof value !== "number") return "not-integer";
  if (value < 0 || value >= 2 ** 64) return "out-of-range";
  return Math.trunc(value);
}

type Parsed =
  | { ok: true; header: ProtectedHeaderParameters; payload: JWTPayload; nbf: number; exp: number }
  | { ok: false; message: string };

/** jwt_verify_lib's Jwt::parseFromString, its checks in its order. */
function parseJwt(token: string): Parsed {
  const fail = (message: string): Parsed => ({ ok: false, message });
  const sections = token.split(".").filter((s) => s !== "");
  if (sections.length !== 3) return fail(JWT_MESSAGES.badFormat);
  const headerBytes = base64url(sections[0]!);
  if (!headerBytes) return fail(JWT_MESSAGES.headerBase64);
  const header = jsonObject(headerBytes);
  if (!header) return fail(JWT_MESSAGES.headerParse);
  if (typeof header.alg !== "string") return fail(JWT_MESSAGES.headerAlg);
  if (!IMPLEMENTED_ALGS.has(header.alg)) return fail(JWT_MESSAGES.headerAlgNotImplemented);
  if (header.kid !== undefined && typeof header.kid !== "string")
    return fail(JWT_MESSAGES.headerKid);
  const payloadBytes = base64url(sections[1]!);
  if (!payloadBytes) return fail(JWT_MESSAGES.payloadBase64);
  const payload = jsonObject(payloadBytes);
  if (!payload) return fail(JWT_MESSAGES.payloadParse);
  if (payload.iss !== undefined && typeof payload.iss !== "string")
    return fail(JWT_MESSAGES.issNotString);
  if (payload.sub !== undefined && typeof payload.sub !== "string")
    return fail(JWT_MESSAGES.subNotString);
  const times = { iat: 0, nbf: 0, exp: 0 };
  for (const name of ["iat", "nbf", "exp"] as const) {
    const value = uint64(payload, name);
    if (value === "not-integer") return fail(JWT_MESSAGES[`${name}NotInteger`]);
    if (value === "out-of-range") return fail(JWT_MESSAGES[`${name}OutOfRange`]);
    if (value !== undefined) times[name] = value;
  }
  if (payload.jti !== undefined && typeof payload.jti !== "string")
    return fail(JWT_MESSAGES.jtiNotString);
  const aud = payload.aud;
  if (
    aud !== undefined &&
    typeof aud !== "string" &&
    !(Array.isArray(aud) && aud.every((a) => typeof a === "string"))
  )
    return fail(JWT_MESSAGES.audNotString);
  if (!base64url(sections[2]!)) return fail(JWT_MESSAGES.signatureBase64);
  return {
    ok: true,
    header: header as ProtectedHeaderParameters,
    payload: payload as JWTPayload,
    nbf: times.nbf,
    exp: times.exp,
  };
}

/** jwt_verify_lib's sanitizeAudience: no http:// or https:// prefix, no trailing slash. */
function sanitizeAudience(aud: string): string {
  if (aud === "") return aud;
  const start = aud.startsWith("http://") ? 7 : aud.startsWith("https://") ? 8 : 0;
  const end = aud.endsWith("/") ? aud.length - 1 : aud.length;
  return aud.slice(start, end);
}

// Istio's default NormalizePayloadInMetadata.SpaceDelimitedClaims.
const SPACE_DELIMITED_CLAIMS = ["scope", "permission"];

/** Envoy's setPayloadMetadata: a space-delimited string claim becomes its list of words. */
function payloadMetadata(payload: JWTPayload): Record<string, unknown> {
  const out: Record<string, unknown> = { ...payload };
  for (const claim of SPACE_DELIMITED_CLAIMS) {
    const value = payload[claim];
    if (typeof value !== "string") continue;
    const words = value.split(" ").filter((w) => w !== "");
    if (words.length) out[claim] = words;
  }
  return out;
}

const KTY_OF_ALG: [RegExp, string][] = [
  [/^(RS|PS)/, "RSA"],
  [/^ES/, "EC"],
  [/^EdDSA$|^Ed25519$/, "OKP"],
  [/^HS/, "oct"],
];

/** jwt_verify_lib's "kid/alg matched": an empty or absent kid on either side fits any. */
const keyFits = (key: JWK, header: ProtectedHeaderParameters) => {
  if (header.kid && key.kid && key.kid !== header.kid) return false;
  return !key.alg || key.alg === header.alg;
};
/** Whether a fitting key can verify the alg at all (jwt_verify_lib skips it otherwise). */
const keyTypeFits = (key: JWK, alg: string) =>
  KTY_OF_ALG.find(([pattern]) => pattern.test(alg))?.[1] === key.kty;

export function createRequestAuthenticator(
  config: MeshConfig,
  workload: Workload,
  fetchJwks: (uri: string) => Promise<JSONWebKeySet>,
  now: () => number = () => Date.now(),
) {
  const rules = config.requestAuthentications
    .filter(
      (ra) =>
        (ra.metadata.namespace ?? config.namespace) === workload.namespace &&
        Object.entries(ra.spec.selector?.matchLabels ?? {}).every(
          ([key, value]) => workload.labels[key] === value,
        ),
    )
    .flatMap((ra) => ra.spec.jwtRules);
  const cache = new Map<string, { keys: JWK[]; fetchedAt: number }>();
  const inlineKeys = new Map<JwtRule, JWK[]>();
  /** JWKS key → alg → its imported form (a key without `alg` may serve several). */
  const importedKeys = new WeakMap<JWK, Map<string, ReturnType<typeof importJWK>>>();
  /** token → the JWKS key (this fetch's object) that verified its signature. */
  const verifiedTokens = new Map<string, JWK>();

  async function keysOf(rule: JwtRule, refresh: boolean): Promise<JWK[]> {
    if (rule.jwks) {
      let keys = inlineKeys.get(rule);
      if (!keys) {
        keys = (JSON.parse(rule.jwks) as JSONWebKeySet).keys;
        inlineKeys.set(rule, keys);
      }
      return keys;
    }
    const uri = rule.jwksUri!;
    const cached = cache.get(uri);
    const age = cached ? now() - cached.fetchedAt : Number.POSITIVE_INFINITY;
    if (cached && age < JWKS_CACHE_MS && !(refresh && age >= UNKNOWN_KID_REFRESH_MS)) {
      return cached.keys;
    }
    const { keys } = await fetchJwks(uri);
    cache.set(uri, { keys, fetchedAt: now() });
    return keys;
  }

  function importedKey(key: JWK, alg: string) {
    let byAlg = importedKeys.get(key);
    if (!byAlg) {
      byAlg = new Map();
      importedKeys.set(key, byAlg);
    }
    let imported = byAlg.get(alg);
    if (!imported) {
      imported = importJWK(key, alg);
      byAlg.set(alg, imported);
      imported.catch(() => byAlg.delete(alg));
    }
    return imported;
  }

  function remember(token: string, key: JWK) {
    verifiedTokens.delete(token);
    verifiedTokens.set(token, key);
    if (verifiedTokens.size > VERIFIED_TOKENS_KEPT) {
      verifiedTokens.delete(verifiedTokens.keys().next().value!);
    }
  }

  async function verify(
    token: string,
    issuers: Set<string>,
    uri: string,
  ): Promise<JwtResult | { rule: JwtRule; payload: JWTPayload }> {
    // Envoy's jwt_authn: 403 for an audience it does not allow, else 401; the challenge names
    // the request's original URI.
    const failure = (body: string): JwtResult => ({
      ok: false,
      status: body === JWT_MESSAGES.audience ? 403 : 401,
      body,
      headers: { "www-authenticate": `Bearer realm="${uri}", error="invalid_token"` },
    });
    const parsed = parseJwt(token);
    if (!parsed.ok) return failure(parsed.message);
    const { header, payload } = parsed;
    // Envoy's isIssuerAllowed: the issuer must be one whose rule names a location it was read from.
    const rule = rules.find((r) => r.issuer === payload.iss);
    if (!rule || !issuers.has(rule.issuer)) return failure(JWT_MESSAGES.unknownIssuer);
    // jwt_verify_lib's verifyTimeConstraint, in whole seconds; exp 0 is no expiry.
    const seconds = Math.floor(now() / 1000);
    if (parsed.nbf > seconds + CLOCK_SKEW_S) return failure(JWT_MESSAGES.notYetValid);
    if (parsed.exp && seconds > parsed.exp + CLOCK_SKEW_S) return failure(JWT_MESSAGES.expired);
    if (rule.audiences?.length) {
      const allowed = new Set(rule.audiences.map(sanitizeAudience));
      const audiences = typeof payload.aud === "string" ? [payload.aud] : (payload.aud ?? []);
      if (!audiences.some((a) => allowed.has(sanitizeAudience(a))))
        return failure(JWT_MESSAGES.audience);
    }
    let fitting: JWK[];
    try {
      fitting = (await keysOf(rule, false)).filter((k) => keyFits(k, header));
      if (!fitting.length) fitting = (await keysOf(rule, true)).filter((k) => keyFits(k, header));
    } catch {
      return failure(JWT_MESSAGES.fetch);
    }
    if (!fitting.length) return failure(JWT_MESSAGES.kidAlg);
    const remembered = verifiedTokens.get(token);
    if (remembered && fitting.includes(remembered)) return { rule, payload };
    // jwt_verify_lib's verifyJwtWithoutTimeChecking: every fitting key is tried in turn.
    const alg = header.alg!;
    for (const key of fitting) {
      if (!keyTypeFits(key, alg)) continue;
      try {
        await compactVerify(token, await importedKey(key, alg), { algorithms: [alg] });
      } catch {
        continue;
      }
      remember(token, key);
      return { rule, payload };
    }
    return failure(JWT_MESSAGES.verification);
  }

  return {
    async authenticate(source: TokenSource): Promise<JwtResult> {
      // Each token with the locations it was read from (one token may sit in several).
      const found = new Map<string, { at: TokenLocation[]; issuers: Set<string> }>();
      for (const rule of rules) {
        for (const location of locationsOf(rule)) {
          const token = extract(location, source);
          if (token === undefined) continue;
          const entry = found.get(token) ?? { at: [], issuers: new Set<string>() };
          const where = locationOf(location);
          const same = (l: TokenLocation) => JSON.stringify(l) === JSON.stringify(where);
          if (!entry.at.some(same)) entry.at.push(where);
          entry.issuers.add(rule.issuer);
          found.set(token, entry);
        }
      }
      if (found.size === 0) return { ok: true, remove: [] };
      let first: { rule: JwtRule; payload: JWTPayload } | undefined;
      const remove: TokenLocation[] = [];
      for (const [token, { at, issuers }] of found) {
        const result = await verify(token, issuers, source.uri ?? "");
        if ("ok" in result) return result;
        first ??= result;
        if (!(result.rule.forwardOriginalToken ?? false)) remove.push(...at);
      }
      const { payload } = first!;
      return {
        ok: true,
        principal: `${payload.iss}/${payload.sub ?? ""}`,
        claims: payloadMetadata(payload),
        remove,
      };
    },
  };
}

/**
 * A request target without a query parameter, as Envoy's JwtParamLocation::removeJwt drops
 * it: every occurrence of the (decoded) name; the `?` goes when nothing is left. The other
 * parameters keep their encoding as sent.
 */
export function removeQueryParam(target: string, name: string): string {
  const q = target.indexOf("?");
  if (q < 0) return target;
  const kept = target
    .slice(q + 1)
    .split("&")
    .filter((pair) => {
      const key = pair.split("=")[0]!;
      try {
        return decodeURIComponent(key.replace(/\+/g, " ")) !== name;
      } catch {
        return key !== name;
      }
    });
  return kept.length && kept.some((p) => p !== "")
    ? `${target.slice(0, q)}?${kept.join("&")}`
    : target.slice(0, q);
}
