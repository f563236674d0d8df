import { baseConfigSchema, booleanFlag, tokenIssuerConfigSchema } from "@thinmesh/platform";
import { z } from "zod";

const seconds = (min: number, max: number, fallback: number) =>
  z.coerce.number().int().min(min).max(max).default(fallback);

/** 32 bytes, base64 (openssl rand -base64 32); `VAR=` means unset. */
const keyEncryptionKey = z.preprocess(
  (value) => (value === "" ? undefined : value),
  z
    .string()
    .transform((value, context) => {
      const key = Buffer.from(value, "base64");
      if (!/^[A-Za-z0-9+/_-]+={0,2}$/.test(value) || key.length !== 32) {
        context.addIssue({
          code: "custom",
          message: `must be 32 random bytes in base64 (openssl rand -base64 32); this decodes to ${key.length} bytes`,
        });
        return z.NEVER;
      }
      return key;
    })
    .optional(),
);

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
    /**
     * Failed sign-ins per account (src/domain/login-throttle.ts): this many go through at
     * once; then each failure locks the account for LOGIN_FIRST_LOCK_SECONDS, doubling up to
     * LOGIN_MAX_LOCK_SECONDS; failures are forgotten LOGIN_FAILURE_MEMORY_SECONDS after the
     * last attempt.
     */
    LOGIN_FREE_FAILURES: z.coerce.number().int().min(1).max(100).default(5),
    LOGIN_FIRST_LOCK_SECONDS: seconds(1, 3600, 1),
    LOGIN_MAX_LOCK_SECONDS: seconds(1, 24 * 3600, 15 * 60),
    LOGIN_FAILURE_MEMORY_SECONDS: seconds(60, 30 * 24 * 3600, 3600),
    /**
     * The key-encryption key (KEK) the signing keys' private halves are encrypted with in the
     * database (src/domain/key-encryption.ts). Unset, a public DEV-ONLY KEK is used, which is
     * refused with NODE_ENV=production (the images set it) or AUTH_REQUIRE_KEK=true.
     */
    AUTH_KEY_ENCRYPTION_KEY: keyEncryptionKey,
    /** The KEK before a rotation: still opens keys sealed with it; they are re-sealed at start. */
    AUTH_KEY_ENCRYPTION_KEY_PREVIOUS: keyEncryptionKey,
    AUTH_REQUIRE_KEK: booleanFlag.default(false),
    NODE_ENV: z.string().optional(),
    /** The first administrator; both or neither. */
    ADMIN_EMAIL: z.email().max(254).optional(),
    ADMIN_PASSWORD: z.string().min(8).max(128).optional(),
  })
  .superRefine((config, context) => {
    if (!config.AUTH_KEY_ENCRYPTION_KEY) {
      const why = config.AUTH_REQUIRE_KEK
        ? "AUTH_REQUIRE_KEK is set"
        : config.NODE_ENV === "production"
          ? "NODE_ENV is production"
          : config.AUTH_KEY_ENCRYPTION_KEY_PREVIOUS
            ? "AUTH_KEY_ENCRYPTION_KEY_PREVIOUS is set (the previous KEK needs a current one)"
            : undefined;
      if (why) {
        context.addIssue({
          code: "custom",
          path: ["AUTH_KEY_ENCRYPTION_KEY"],
          message: `required because ${why}: the signing keys are encrypted with it in the database; generate one with \`openssl rand -base64 32\` and provide it from a Secret (docs/security.md)`,
        });
      }
    }
    if (config.LOGIN_FAILURE_MEMORY_SECONDS <= config.LOGIN_MAX_LOCK_SECONDS) {
      context.addIssue({
        code: "custom",
        path: ["LOGIN_FAILURE_MEMORY_SECONDS"],
        message: `must be longer than LOGIN_MAX_LOCK_SECONDS (${config.LOGIN_MAX_LOCK_SECONDS}): failures forgotten before the lock ends would start each lock over at LOGIN_FREE_FAILURES free guesses`,
      });
    }
    if (config.LOGIN_FIRST_LOCK_SECONDS > config.LOGIN_MAX_LOCK_SECONDS) {
      context.addIssue({
        code: "custom",
        path: ["LOGIN_FIRST_LOCK_SECONDS"],
        message: `must not be longer than LOGIN_MAX_LOCK_SECONDS (${config.LOGIN_MAX_LOCK_SECONDS})`,
      });
    }
    if (Boolean(config.ADMIN_EMAIL) === Boolean(config.ADMIN_PASSWORD)) return;
    context.addIssue({
      code: "custom",
      path: [config.ADMIN_EMAIL ? "ADMIN_PASSWORD" : "ADMIN_EMAIL"],
      message: "ADMIN_EMAIL and ADMIN_PASSWORD must be set together (or neither)",
    });
  });

export type AuthConfig = z.infer<typeof authConfigSchema>;
