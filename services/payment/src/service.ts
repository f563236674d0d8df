import { fileURLToPath } from "node:url";
import { createTokenVerifier, type ServiceDefinition } from "@thinmesh/platform";
import { type PaymentConfig, paymentConfigSchema } from "./config.js";
import { schema } from "./db/schema.js";
import type { PaymentProvider } from "./domain/provider.js";
import { createSimulatedProvider } from "./domain/simulator.js";
import { onPaymentRequested, producedEvents } from "./events.js";
import { countingProviderCalls } from "./provider-calls.js";
import { paymentRpc } from "./rpc.js";
import { createPaymentStore } from "./store.js";

export interface PaymentServiceOptions {
  /** The provider adapter to charge through; the deterministic simulator by default. */
  provider?: (config: PaymentConfig) => PaymentProvider;
}

export const simulatorFor = (config: PaymentConfig) =>
  createSimulatedProvider({
    declineAboveMinor: BigInt(config.PAYMENT_DECLINE_ABOVE_MINOR),
    transientFailures: config.PAYMENT_SIMULATOR_TRANSIENT_FAILURES,
  });

/** The payment service; a real provider adapter would be chosen here. */
export function definePaymentService(
  options: PaymentServiceOptions = {},
): ServiceDefinition<typeof paymentConfigSchema, typeof schema> {
  return {
    name: "payment",
    config: paymentConfigSchema,
    database: { schema, migrationsFolder: fileURLToPath(new URL("../drizzle", import.meta.url)) },
    create({ config, database, logger, metrics, eventBus }) {
      const provider = countingProviderCalls(
        (options.provider ?? simulatorFor)(config),
        metrics.registry,
        logger,
      );
      return {
        rpc: [paymentRpc(createPaymentStore(database.db))],
        events: {
          bus: eventBus(producedEvents),
          consumes: [onPaymentRequested(provider, logger)],
        },
        // Serves the outbox's admin routes (dead events, re-drive), which need admin tokens.
        verifier: createTokenVerifier({
          keys: new URL(config.AUTH_JWKS_URL),
          issuer: config.AUTH_ISSUER,
          audience: config.AUTH_AUDIENCE,
        }),
      };
    },
  };
}

export const paymentService = definePaymentService();
