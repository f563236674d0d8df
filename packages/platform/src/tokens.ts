import { createContextKey, type HandlerContext } from "@connectrpc/connect";
import type { MiddlewareHandler } from "hono";
import { createRemoteJWKSet, errors, type JWTPayload, type JWTVerifyGetKey, jwtVerify } from "jose";
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
}

// Verified tokens remembered per verifier; a client sends the same one until it expires.
const verifiedCacheSize = 10_000;

/**
 * Verifies access tokens issued by the auth service. jose does not require exp, iss or aud
 * unless told, so all of them are demanded here, and only ES256 is accepted (no "none", no HMAC
 * signed with the public key). The remote key set is cached and refetched on an unknown kid.
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
  return {
    async verify(token) {
      const known = verified.get(token);
      if (known && known.expiresAt.getTime() > Date.now()) return known;
      verified.delete(token);
      const claims = await verifySignedToken(token, keys, options);
      // Oldest first out: a Map iterates in insertion order.
      if (verified.size >= verifiedCacheSize) verified.delete(verified.keys().next().value!);
      verified.set(token, claims);
      return claims;
    },
  };
}

async function verifySignedToken(
  token: string,
  keys: JWTVerifyGetKey,
  options: TokenVerifierOptions,
): Promise<Claims> {
  let payload: JWTPayload;
  try {
    ({ payload } = await jwtVerify(token, keys, {
      algorithms: ["ES256"],
      issuer: options.issuer,
      audience: options.audience,
      requiredClaims: ["exp", "iat", "sub"],
      clockTolerance: 5,
    }));
  } catch (error) {
    throw rejection(error);
  }
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
