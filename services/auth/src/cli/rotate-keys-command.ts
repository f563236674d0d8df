import { ConfigError, loadConfig, openDatabase } from "@thinmesh/platform";
import { authConfigSchema } from "../config.js";
import { authDatabase, signingKeysFor } from "../service.js";
import { createAuthStore } from "../store.js";

export interface RotationResult {
  kid: string;
  retired: string[];
  deleted: number;
}

/**
 * Rotates the signing key in the database the service is configured with (same variables,
 * the KEK included). Running replicas start signing with the new key within
 * SIGNING_KEY_CACHE_SECONDS. With PGLITE_DATA_DIR, stop the service first: only one process
 * may open a PGlite directory.
 *
 * The stored keys are opened (and re-sealed) first, as at the service's start: with a KEK
 * that does not open them the rotation stops with a ConfigError instead of adding a key the
 * service could not open.
 */
export async function rotateKeys(
  env: Record<string, string | undefined>,
  now: () => Date = () => new Date(),
): Promise<RotationResult> {
  const config = loadConfig(authConfigSchema, env);
  if (!config.DATABASE_URL && !config.PGLITE_DATA_DIR) {
    throw new ConfigError([
      "DATABASE_URL: set it (or PGLITE_DATA_DIR) to the auth database whose keys to rotate; an in-memory database has none (it is not set)",
    ]);
  }
  const database = await openDatabase({
    url: config.DATABASE_URL,
    dataDir: config.PGLITE_DATA_DIR,
    poolSize: 1,
    ...authDatabase,
  });
  try {
    await database.migrate();
    const keys = signingKeysFor(config, createAuthStore(database.db), now);
    await keys.sealStoredKeys();
    return await keys.rotateSigningKey();
  } finally {
    await database.close();
  }
}
