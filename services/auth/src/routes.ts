import type { Context, Hono } from "hono";
import type { SigningKeys } from "./domain/signing-keys.js";

export interface AuthRoutesOptions {
  keys: SigningKeys;
  issuer: string;
  /** Base URL clients reach this service at; unset, the request's own origin. */
  publicUrl: string | undefined;
}

export const jwksPath = "/.well-known/jwks.json";

function baseUrl(c: Context, publicUrl: string | undefined): string {
  if (publicUrl) return publicUrl.replace(/\/+$/, "");
  const url = new URL(c.req.url);
  // Behind a TLS-terminating gateway the request reaches us over plain HTTP.
  const proto = c.req.header("x-forwarded-proto");
  if (proto === "https" || proto === "http") url.protocol = `${proto}:`;
  return url.origin;
}

/** The key set verifiers fetch, and a discovery document pointing at it. */
export function authRoutes(options: AuthRoutesOptions) {
  return (app: Hono) => {
    app.get(jwksPath, async (c) => {
      // Read from the database on every request (a tiny table), so a rotation by any replica
      // or the CLI is published at once; verifiers cache the set themselves.
      const keys = await options.keys.publishedKeys();
      c.header("cache-control", "public, max-age=60");
      return c.json({ keys });
    });

    // Only the fields that describe what this service really offers: it issues access tokens
    // through its RPCs, not through OAuth endpoints. Note that issuer is a name
    // (AUTH_ISSUER), not necessarily the URL this document is served from.
    app.get("/.well-known/openid-configuration", (c) => {
      c.header("cache-control", "public, max-age=300");
      return c.json({
        issuer: options.issuer,
        jwks_uri: `${baseUrl(c, options.publicUrl)}${jwksPath}`,
        subject_types_supported: ["public"],
        id_token_signing_alg_values_supported: ["ES256"],
        claims_supported: ["iss", "aud", "sub", "exp", "iat", "roles", "email"],
      });
    });
  };
}
