import { createContextKey, type HandlerContext } from "@connectrpc/connect";
import type { MiddlewareHandler } from "hono";
import { createRemoteJWKSet, errors, type JWTPayload, type JWTVerifyGetKey, jwtVerify } from "jose";
import type { z } from "zod";
import type { tokenConfigSchema } from "./config.js";
import { DomainError, unauthenticated, unavailable } from "./errors.js";

/** What a verified access token says about the caller. */
export interface Claims {
  /** The user id. */
  subject: string;
  roles: string[];
  expiresAt: Date;
  payload: JWTPayload;
}

export interface TokenVerifier {
  /** Resolves to the token's claims, or rejects with an unauthenticated DomainError. */
  verify(token: string): Promise<Claims>;
}

export interface TokenVerifierOptions {
  /** The JWKS URL of the auth service, or a key resolver (tests, the auth service itself). */
  keys: URL | JWTVerifyGetKey;
  issuer: string;
  audience: string;
  /**
   * The issuer's access-token lifetime (AUTH_ACCESS_TOKEN_TTL_SECONDS): a token whose exp − iat
   * is longer (beyond the skew) was not issued by the rules, whoever signed it. Default 900.
   */
  accessTokenTtlSeconds?: number;
  /** Allowed disagreement of clocks on exp, nbf and iat (AUTH_CLOCK_SKEW_SECONDS). Default 60. */
  clockSkewSeconds?: number;
}

/** The verifier a service configured with tokenConfigSchema's variables uses. */
export function tokenVerifierOptions(
  config: z.infer<typeof tokenConfigSchema>,
): TokenVerifierOptions {
  return {
    keys: new URL(config.AUTH_JWKS_URL),
    issuer: config.AUTH_ISSUER,
    audience: config.AUTH_AUDIENCE,
    accessTokenTtlSeconds: config.AUTH_ACCESS_TOKEN_TTL_SECONDS,
    clockSkewSeconds: config.AUTH_CLOCK_SKEW_SECONDS,
  };
}

// Verified tokens remembered per verifier; a client sends the same one until it expires.
const verifiedCacheSize = 10_000;

/**
 * Verifies access tokens issued by the auth service. jose does not require exp, iss or aud
 * unless told, so all of them are demanded here, and only ES256 is accepted (no "none", no HMAC
 * signed with the public key). The remote key set is cached and refetched on an unknown kid.
 *
 * Beyond the signature, a token must look like one the issuer's rules produce: a non-empty
 * sub, an iat not in the future, and a lifetime (exp − iat) no longer than the issuer's
 * access-token TTL, each with the clock skew allowed. A token signed with a leaked or misused
 * key (or by a buggy issuer) for user "" or valid until the year 3000 is refused.
 *
 * A token that verified is remembered, byte for byte, until it expires (as Envoy's jwt_authn
 * cache does): checking its signature again would cost ~0.5 ms of CPU on every request and
 * could not change the answer.
 */
export function createTokenVerifier(options: TokenVerifierOptions): TokenVerifier {
  const keys: JWTVerifyGetKey =
    options.keys instanceof URL
      ? createRemoteJWKSet(options.keys, { cooldownDuration: 30_000, cacheMaxAge: 600_000 })
      : options.keys;
  const verified = new Map<string, Claims>();
  const rules: TokenRules = {
    issuer: options.issuer,
    audience: options.audience,
    accessTokenTtlSeconds: options.accessTokenTtlSeconds ?? 15 * 60,
    clockSkewSeconds: options.clockSkewSeconds ?? 60,
  };
  return {
    async verify(token) {
      const known = verified.get(token);
      if (known && known.expiresAt.getTime() > Date.now()) return known;
      verified.delete(token);
      const claims = await verifySignedToken(token, keys, rules);
      // Oldest first out: a Map iterates in insertion order.
      if (verified.size >= verifiedCacheSize) verified.delete(verified.keys().next().value!);
      verified.set(token, claims);
      return claims;
    },
  };
}

type TokenRules = Required<Omit<TokenVerifierOptions, "keys">>;

async function verifySignedToken(
  token: string,
  keys: JWTVerifyGetKey,
  rules: TokenRules,
): Promise<Claims> {
  let payload: JWTPayload;
  try {
    ({ payload } = await jwtVerify(token, keys, {
      algorithms: ["ES256"],
      issuer: rules.issuer,
      audience: rules.audience,
      requiredClaims: ["exp", "iat", "sub"],
      clockTolerance: rules.clockSkewSeconds,
    }));
  } catch (error) {
    throw rejection(error);
  }
  checkIssuanceRules(payload, rules);
  const roles = payload.roles;
  if (!Array.isArray(roles) || !roles.every((r) => typeof r === "string")) {
    throw unauthenticated("access token rejected: the roles claim must be a list of strings");
  }
  return {
    subject: payload.sub as string,
    roles,
    expiresAt: new Date((payload.exp as number) * 1000),
    payload,
  };
}

/**
 * What jose does not check. It has made sure that exp, iat and sub exist and that exp and iat
 * are numbers; present is not enough.
 */
function checkIssuanceRules(payload: JWTPayload, rules: TokenRules): void {
  const { sub } = payload;
  const iat = payload.iat as number;
  const exp = payload.exp as number;
  if (typeof sub !== "string" || sub.trim() === "") {
    throw unauthenticated('access token rejected: claim "sub" must be a non-empty user id');
  }
  const now = Math.floor(Date.now() / 1000);
  if (iat > now + rules.clockSkewSeconds) {
    throw unauthenticated(
      `access token rejected: claim "iat" is ${iat - now} s in the future (more than the ${rules.clockSkewSeconds} s clock skew allowed)`,
    );
  }
  const longest = rules.accessTokenTtlSeconds + rules.clockSkewSeconds;
  if (exp - iat > longest) {
    throw unauthenticated(
      `access token rejected: it is valid for ${exp - iat} s (exp − iat), longer than the issuer's access-token lifetime of ${rules.accessTokenTtlSeconds} s (plus ${rules.clockSkewSeconds} s skew)`,
    );
  }
}

function rejection(error: unknown): DomainError {
  // A network failure reaching the JWKS is not the caller's fault.
  if (error instanceof errors.JWKSTimeout || !(error instanceof errors.JOSEError)) {
    const detail = error instanceof Error ? error.message : String(error);
    return unavailable(
      `cannot fetch the auth service's signing keys to check the token: ${detail}`,
    );
  }
  if (error instanceof errors.JWTExpired) {
    return unauthenticated("access token rejected: it has expired; refresh it or sign in again");
  }
  if (error instanceof errors.JWTClaimValidationFailed) {
    return unauthenticated(`access token rejected: claim "${error.claim}" ${error.reason}`);
  }
  if (error instanceof errors.JWKSNoMatchingKey) {
    return unauthenticated(
      "access token rejected: signed with a key the auth service does not publish",
    );
  }
  if (error instanceof errors.JOSEAlgNotAllowed) {
    return unauthenticated("access token rejected: only ES256 signatures are accepted");
  }
  return unauthenticated(`access token rejected: ${(error as Error).message}`);
}

/** Reads "Authorization: Bearer <token>"; undefined when absent. */
export function bearerToken(authorization: string | null | undefined): string | undefined {
  if (!authorization) return undefined;
  const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization);
  if (!match) throw unauthenticated('the Authorization header must be "Bearer <access token>"');
  return match[1];
}

/** The verified caller of the current RPC, set by the access interceptor. */
export const callerKey = createContextKey<Claims | undefined>(undefined, {
  description: "claims of the verified access token",
});

/** The caller of an RPC whose access rule requires a token. */
export function caller(context: HandlerContext): Claims {
  const claims = context.values.get(callerKey);
  if (!claims) throw unauthenticated("this call needs an access token (Authorization: Bearer ...)");
  return claims;
}

/** Hono middleware for plain routes: 401 without a valid token; claims in c.get("caller"). */
export function requireToken(
  verifier: TokenVerifier,
): MiddlewareHandler<{ Variables: { caller: Claims } }> {
  return async (c, next) => {
    try {
      const token = bearerToken(c.req.header("authorization"));
      if (!token)
        throw unauthenticated("this route needs an access token (Authorization: Bearer ...)");
      c.set("caller", await verifier.verify(token));
    } catch (error) {
      if (error instanceof DomainError && error.kind === "unauthenticated") {
        c.header("WWW-Authenticate", 'Bearer error="invalid_token"');
        return c.json({ code: error.kind, message: error.message }, 401);
      }
      throw error;
    }
    await next();
  };
}
