import { baseConfigSchema, tokenIssuerConfigSchema } from "@thinmesh/platform";
import { z } from "zod";

const seconds = (min: number, max: number, fallback: number) =>
  z.coerce.number().int().min(min).max(max).default(fallback);

/** The auth service's environment. Every key is the variable name, so errors name it. */
export const authConfigSchema = baseConfigSchema
  // The same issuer, audience, lifetime and skew as the services that verify the tokens
  // (AUTH_ACCESS_TOKEN_TTL_SECONDS: how long the access tokens issued here live).
  .extend(tokenIssuerConfigSchema.shape)
  .extend({
    /**
     * Where clients reach this service, for jwks_uri in the discovery document. Unset, the
     * origin the discovery request arrived on is used (fine locally; set it in a cluster).
     */
    PUBLIC_URL: z.url({ protocol: /^https?$/ }).optional(),
    /** Renamed AUTH_ACCESS_TOKEN_TTL_SECONDS (the verifiers read it too); refused, not ignored. */
    ACCESS_TOKEN_TTL_SECONDS: z
      .undefined({
        error:
          "renamed AUTH_ACCESS_TOKEN_TTL_SECONDS, shared with the services that verify the tokens: set that one instead",
      })
      .optional(),
    REFRESH_TOKEN_TTL_SECONDS: seconds(300, 365 * 24 * 3600, 30 * 24 * 3600),
    /** How long a spent refresh token may be presented again (a retried request) safely. */
    REFRESH_RETRY_GRACE_SECONDS: seconds(0, 300, 30),
    /** How long a replica keeps signing with the key it read before looking for a newer one. */
    SIGNING_KEY_CACHE_SECONDS: seconds(0, 300, 30),
    /** The first administrator; both or neither. */
    ADMIN_EMAIL: z.email().max(254).optional(),
    ADMIN_PASSWORD: z.string().min(8).max(128).optional(),
  })
  .superRefine((config, context) => {
    if (Boolean(config.ADMIN_EMAIL) === Boolean(config.ADMIN_PASSWORD)) return;
    context.addIssue({
      code: "custom",
      path: [config.ADMIN_EMAIL ? "ADMIN_PASSWORD" : "ADMIN_EMAIL"],
      message: "ADMIN_EMAIL and ADMIN_PASSWORD must be set together (or neither)",
    });
  });

export type AuthConfig = z.infer<typeof authConfigSchema>;
