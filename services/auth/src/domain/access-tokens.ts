import { SignJWT } from "jose";
import type { Clock } from "./ports.js";
import { type SigningKeys, signingAlgorithm } from "./signing-keys.js";

export interface AccessTokenOptions {
  keys: SigningKeys;
  now: Clock;
  issuer: string;
  audience: string;
  ttlSeconds: number;
}

export interface AccessTokenSubject {
  id: string;
  email: string;
  roles: string[];
}

export type AccessTokenIssuer = ReturnType<typeof createAccessTokenIssuer>;

/** Signs short-lived ES256 access tokens with the current key. */
export function createAccessTokenIssuer(options: AccessTokenOptions) {
  return {
    ttlSeconds: options.ttlSeconds,
    async issue(subject: AccessTokenSubject): Promise<{ token: string; expiresIn: number }> {
      const key = await options.keys.currentSigningKey();
      const issuedAt = Math.floor(options.now().getTime() / 1000);
      const token = await new SignJWT({ roles: subject.roles, email: subject.email })
        // RFC 9068 names access tokens "at+jwt", so an ID token cannot pass for one.
        .setProtectedHeader({ alg: signingAlgorithm, kid: key.kid, typ: "at+jwt" })
        .setIssuer(options.issuer)
        .setAudience(options.audience)
        .setSubject(subject.id)
        .setIssuedAt(issuedAt)
        .setExpirationTime(issuedAt + options.ttlSeconds)
        .sign(key.privateKey);
      return { token, expiresIn: options.ttlSeconds };
    },
  };
}
