import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import type { ServiceDefinition, ServiceDeps, ServiceParts } from "@thinmesh/platform";
import { type AuthConfig, authConfigSchema } from "./config.js";
import { type AuthSchema, schema } from "./db/schema.js";
import { createAccessTokenIssuer } from "./domain/access-tokens.js";
import { createAccounts } from "./domain/accounts.js";
import { createKeyEncryption, devOnlyKeyEncryptionKey } from "./domain/key-encryption.js";
import { createLoginThrottle } from "./domain/login-throttle.js";
import type { AuthStore, Clock } from "./domain/ports.js";
import { createRefreshTokens } from "./domain/refresh-tokens.js";
import { createSigningKeys } from "./domain/signing-keys.js";
import { authRoutes } from "./routes.js";
import { authRpc } from "./rpc.js";
import { createAuthStore } from "./store.js";

export const authDatabase = {
  schema,
  migrationsFolder: fileURLToPath(new URL("../drizzle", import.meta.url)),
};

/** The KEK as configured; the DEV-ONLY one when none is (config.ts refuses that in production). */
export function keyEncryptionFor(config: AuthConfig) {
  return createKeyEncryption({
    current: config.AUTH_KEY_ENCRYPTION_KEY ?? devOnlyKeyEncryptionKey,
    previous: config.AUTH_KEY_ENCRYPTION_KEY_PREVIOUS,
  });
}

/** The signing keys as configured; shared by the service and the rotate-keys CLI. */
export function signingKeysFor(
  config: AuthConfig,
  store: AuthStore,
  now: Clock = () => new Date(),
) {
  return createSigningKeys({
    store,
    now,
    keyEncryption: keyEncryptionFor(config),
    accessTokenTtlSeconds: config.AUTH_ACCESS_TOKEN_TTL_SECONDS,
    cacheSeconds: config.SIGNING_KEY_CACHE_SECONDS,
    clockSkewSeconds: config.AUTH_CLOCK_SKEW_SECONDS,
  });
}

const throttlePruneIntervalMs = 10 * 60_000;

/** Runs fn once; a failure (database not ready yet) is not remembered. */
function once<T>(fn: () => Promise<T>): () => Promise<T> {
  let result: Promise<T> | undefined;
  return () => {
    result ??= fn().catch((error) => {
      result = undefined;
      throw error;
    });
    return result;
  };
}

/** Wires store, domain, RPCs and routes. Tests use the returned domain objects directly. */
export function createAuth({ config, database, logger }: ServiceDeps<AuthConfig, AuthSchema>) {
  const now: Clock = () => new Date();
  const store = createAuthStore(database.db);
  const keys = signingKeysFor(config, store, now);
  const successorSecret = once(async () => {
    const candidate = randomBytes(32).toString("base64url");
    return Buffer.from(
      await store.ensureSecret("refresh-successor", candidate, now()),
      "base64url",
    );
  });
  const refreshTokens = createRefreshTokens({
    store,
    now,
    ttlSeconds: config.REFRESH_TOKEN_TTL_SECONDS,
    retryGraceSeconds: config.REFRESH_RETRY_GRACE_SECONDS,
    successorSecret,
  });
  const accessTokens = createAccessTokenIssuer({
    keys,
    now,
    issuer: config.AUTH_ISSUER,
    audience: config.AUTH_AUDIENCE,
    ttlSeconds: config.AUTH_ACCESS_TOKEN_TTL_SECONDS,
  });
  const throttle = createLoginThrottle({
    store,
    now,
    policy: {
      freeFailures: config.LOGIN_FREE_FAILURES,
      firstLockSeconds: config.LOGIN_FIRST_LOCK_SECONDS,
      maxLockSeconds: config.LOGIN_MAX_LOCK_SECONDS,
      memorySeconds: config.LOGIN_FAILURE_MEMORY_SECONDS,
    },
  });
  const accounts = createAccounts({ store, now, accessTokens, refreshTokens, throttle });
  // Expired throttle rows mean nothing; they are deleted now and then, not on every login.
  let pruning: NodeJS.Timeout | undefined;
  const pruneThrottles = () =>
    throttle
      .prune()
      .then((deleted) => deleted > 0 && logger.debug({ deleted }, "pruned expired login throttles"))
      .catch((err) => logger.warn({ err }, "cannot prune login throttles; retrying later"));

  const parts: ServiceParts = {
    rpc: [authRpc(accounts)],
    routes: authRoutes({ keys, issuer: config.AUTH_ISSUER, publicUrl: config.PUBLIC_URL }),
    async onDatabaseReady() {
      const encryption = keyEncryptionFor(config);
      if (!config.AUTH_KEY_ENCRYPTION_KEY) {
        logger.warn(
          { kek: encryption.currentId },
          "AUTH_KEY_ENCRYPTION_KEY is not set: the signing keys are encrypted with the public DEV-ONLY key-encryption key; set a real one outside a laptop (docs/security.md)",
        );
      }
      const { sealed, resealed } = await keys.sealStoredKeys();
      logger.info(
        { kek: encryption.currentId, previousKek: encryption.previousId, sealed, resealed },
        "signing keys encrypted at rest with the current key-encryption key",
      );
      const kid = await keys.ensureSigningKey();
      await successorSecret();
      logger.info({ kid }, "signing key ready");
      if (config.ADMIN_EMAIL && config.ADMIN_PASSWORD) {
        const { user, created, promoted, refused } = await accounts.provisionAdmin(
          config.ADMIN_EMAIL,
          config.ADMIN_PASSWORD,
        );
        if (refused) {
          logger.error(
            { userId: user.id },
            "ADMIN_EMAIL belongs to an existing account whose password is not ADMIN_PASSWORD: it was not made an administrator; choose another ADMIN_EMAIL or sign in as that account and set the password",
          );
        } else logger.info({ userId: user.id, created, promoted }, "administrator provisioned");
      }
      await pruneThrottles();
      pruning ??= setInterval(pruneThrottles, throttlePruneIntervalMs).unref();
    },
    async onClose() {
      clearInterval(pruning);
    },
  };
  return { parts, store, keys, accounts, refreshTokens, throttle };
}

export const authService: ServiceDefinition<typeof authConfigSchema, AuthSchema> = {
  name: "auth",
  config: authConfigSchema,
  database: authDatabase,
  create: (deps) => createAuth(deps).parts,
};
