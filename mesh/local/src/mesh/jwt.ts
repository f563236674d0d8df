/**
 * RequestAuthentication as Istio configures Envoy's jwt_authn filter: one provider per jwtRule,
 * a requirement of "any provider, or no token at all" (allow_missing). So: no token passes with
 * no identity (an AuthorizationPolicy's requestPrincipals then refuses it); a token present but
 * invalid is answered 401 with jwt_verify_lib's message (Envoy's body). Tokens are read from
 * the rule's fromHeaders / fromParams, by default from `Authorization: Bearer …` and the
 * `access_token` query parameter. Checks in jwt_verify_lib's order: form, issuer (one a rule
 * names), time (exp, nbf, 60 s clock skew, Envoy's default), audiences (when the rule lists
 * any), then the key (kid/alg in the JWKS) and the signature (jose). The principal is
 * "<iss>/<sub>"; forwardOriginalToken false (Istio's default) strips the token before the app.
 * JWKS: fetched through the caller's fetchJwks and cached 5 min (Envoy's remote_jwks default),
 * refreshed early on an unknown kid at most every 30 s. A signature once verified is remembered
 * for the token and the JWKS key that verified it (Envoy's jwt_cache_config, which Istio leaves
 * off; here a signature check costs a crypto round trip on Node's thread pool per request): the
 * form, issuer, time and audience checks still run on every request, and a key that leaves the
 * JWKS (a refetch) makes its tokens verified afresh. Not implemented (refused at load):
 * fromCookies, outputPayloadToHeader, outputClaimToHeaders, OpenID discovery without jwksUri.
 */
import {
  compactVerify,
  decodeJwt,
  decodeProtectedHeader,
  importJWK,
  type JSONWebKeySet,
  type JWK,
  type JWTPayload,
  type ProtectedHeaderParameters,
} from "jose";
import type { Workload } from "./authz.js";
import type { JwtRule, MeshConfig } from "./config.js";

export type JwtResult =
  | { ok: true; principal?: string; claims?: Record<string, unknown>; stripAuthorization: boolean }
  | { ok: false; status: 401; body: string; headers: Record<string, string> };

export interface TokenSource {
  header(name: string): string | undefined;
  query: URLSearchParams;
}

/** jwt_verify_lib's messages (status.cc), as Envoy answers them. */
export const JWT_MESSAGES = {
  badFormat: "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
  headerParse: "Jwt header is an invalid JSON",
  payloadParse: "Jwt payload is an invalid JSON",
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

function extract(location: Location, source: TokenSource): string | undefined {
  if (location.param) return source.query.get(location.param) ?? undefined;
  const { name, prefix } = location.header!;
  const value = source.header(name);
  if (value === undefined) return undefined;
  if (prefix && value.slice(0, prefix.length).toLowerCase() !== prefix.toLowerCase())
    return undefined;
  return value.slice(prefix.length).trim() || undefined;
}

const KTY_OF_ALG: [RegExp, string][] = [
  [/^(RS|PS)/, "RSA"],
  [/^ES/, "EC"],
  [/^EdDSA$|^Ed25519$/, "OKP"],
  [/^HS/, "oct"],
];

const keyFits = (key: JWK, header: ProtectedHeaderParameters) => {
  if (header.kid !== undefined && key.kid !== undefined && key.kid !== header.kid) return false;
  if (key.alg !== undefined && key.alg !== header.alg) return false;
  const kty = KTY_OF_ALG.find(([pattern]) => pattern.test(header.alg ?? ""))?.[1];
  return kty !== undefined && key.kty === kty;
};

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

  const failure = (body: string): JwtResult => ({
    ok: false,
    status: 401,
    body,
    // Envoy's jwt_authn answers a bad token with this challenge.
    headers: { "www-authenticate": 'Bearer realm="", error="invalid_token"' },
  });

  async function verify(token: string): Promise<JwtResult> {
    if (!/^[\w-]+\.[\w-]+\.[\w-]+$/.test(token)) return failure(JWT_MESSAGES.badFormat);
    let header: ProtectedHeaderParameters;
    let payload: JWTPayload;
    try {
      header = decodeProtectedHeader(token);
    } catch {
      return failure(JWT_MESSAGES.headerParse);
    }
    try {
      payload = decodeJwt(token);
    } catch {
      return failure(JWT_MESSAGES.payloadParse);
    }
    const rule = rules.find((r) => r.issuer === payload.iss);
    if (!rule) return failure(JWT_MESSAGES.unknownIssuer);
    const seconds = now() / 1000;
    if (typeof payload.nbf === "number" && seconds < payload.nbf - CLOCK_SKEW_S) {
      return failure(JWT_MESSAGES.notYetValid);
    }
    if (typeof payload.exp === "number" && seconds > payload.exp + CLOCK_SKEW_S) {
      return failure(JWT_MESSAGES.expired);
    }
    if (rule.audiences?.length) {
      const audiences = typeof payload.aud === "string" ? [payload.aud] : (payload.aud ?? []);
      if (!audiences.some((a) => rule.audiences!.includes(a)))
        return failure(JWT_MESSAGES.audience);
    }
    let key: JWK | undefined;
    try {
      key = (await keysOf(rule, false)).find((k) => keyFits(k, header));
      if (!key) key = (await keysOf(rule, true)).find((k) => keyFits(k, header));
    } catch {
      return failure(JWT_MESSAGES.fetch);
    }
    if (!key) return failure(JWT_MESSAGES.kidAlg);
    if (verifiedTokens.get(token) !== key) {
      try {
        await compactVerify(token, await importedKey(key, header.alg!), {
          algorithms: [header.alg!],
        });
      } catch {
        return failure(JWT_MESSAGES.verification);
      }
      remember(token, key);
    }
    return {
      ok: true,
      principal: `${payload.iss}/${payload.sub ?? ""}`,
      claims: payload as Record<string, unknown>,
      stripAuthorization: !(rule.forwardOriginalToken ?? false),
    };
  }

  return {
    async authenticate(source: TokenSource): Promise<JwtResult> {
      const locations = rules.flatMap(locationsOf);
      const tokens = [
        ...new Set(locations.map((l) => extract(l, source)).filter((t) => t !== undefined)),
      ];
      if (tokens.length === 0) return { ok: true, stripAuthorization: false };
      let first: JwtResult | undefined;
      for (const token of tokens) {
        const result = await verify(token);
        if (!result.ok) return result;
        first ??= result;
      }
      return first!;
    },
  };
}
