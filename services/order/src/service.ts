import { fileURLToPath } from "node:url";
import {
  createTokenVerifier,
  type ServiceDefinition,
  tokenVerifierOptions,
} from "@thinmesh/platform";
import { createCatalogClient, productCatalog } from "./catalog.js";
import { orderConfigSchema } from "./config.js";
import { schema } from "./db/schema.js";
import { sagaHandlers } from "./events.js";
import { producedEvents } from "./messages.js";
import { orderRpc } from "./rpc.js";
import { createOrderStore } from "./store.js";

export const orderService: ServiceDefinition<typeof orderConfigSchema, typeof schema> = {
  name: "order",
  config: orderConfigSchema,
  database: { schema, migrationsFolder: fileURLToPath(new URL("../drizzle", import.meta.url)) },
  create({ config, database, logger, eventBus }) {
    // Subscribers (catalog, payment) and their URLs (CATALOG_URL, PAYMENT_URL) come from
    // config/subscriptions.yaml and the environment; the platform runs the relay.
    const bus = eventBus(producedEvents);
    const store = createOrderStore(database.db, bus);
    const catalog = productCatalog(createCatalogClient(config.CATALOG_URL));
    return {
      rpc: [orderRpc({ store, catalog })],
      verifier: createTokenVerifier(tokenVerifierOptions(config)),
      events: { bus, consumes: sagaHandlers(logger.child({ component: "saga" })) },
    };
  },
};
