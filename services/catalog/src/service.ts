import { fileURLToPath } from "node:url";
import {
  ConfigError,
  createTokenVerifier,
  type ServiceDefinition,
  tokenVerifierOptions,
} from "@thinmesh/platform";
import { catalogConfigSchema } from "./config.js";
import { schema } from "./db/schema.js";
import type { NewProduct } from "./domain/product.js";
import { loadSeedFile, SeedFileError, seedProducts } from "./domain/seed.js";
import { catalogEventHandlers, catalogProduces } from "./events.js";
import { catalogRpc } from "./rpc.js";
import { createProductStore } from "./store.js";

export const catalogService: ServiceDefinition<typeof catalogConfigSchema, typeof schema> = {
  name: "catalog",
  config: catalogConfigSchema,
  database: { schema, migrationsFolder: fileURLToPath(new URL("../drizzle", import.meta.url)) },
  async create({ config, database, logger, eventBus }) {
    const store = createProductStore(database.db);
    // The seed file is read now, so a bad one stops the start instead of being retried as if
    // the database were not ready yet.
    const seed = config.SEED_PRODUCTS ? await readSeed(config.SEED_FILE) : undefined;
    return {
      rpc: [catalogRpc(store)],
      verifier: createTokenVerifier(tokenVerifierOptions(config)),
      // StockReserved and StockRejected go to their subscriber (order, at ORDER_URL) through
      // the outbox; the saga's events for the catalog arrive at EventSinkService.
      events: { bus: eventBus(catalogProduces), consumes: catalogEventHandlers(logger) },
      onDatabaseReady: seed
        ? async () => {
            const inserted = await seedProducts(store, seed);
            logger.info({ inserted, file: config.SEED_FILE }, "seeded the catalog");
          }
        : undefined,
    };
  },
};

async function readSeed(path: string): Promise<NewProduct[]> {
  try {
    return await loadSeedFile(path);
  } catch (error) {
    // A configuration problem: runMain reports it on one line and exits with EX_CONFIG.
    if (error instanceof SeedFileError) throw new ConfigError([`SEED_FILE: ${error.message}`]);
    throw error;
  }
}
