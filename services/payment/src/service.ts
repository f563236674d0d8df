import { fileURLToPath } from "node:url";
import {
  createTokenVerifier,
  type ServiceDefinition,
  tokenVerifierOptions,
} from "@thinmesh/platform";
import { createCharger } from "./charger.js";
import { type PaymentConfig, paymentConfigSchema } from "./config.js";
import { schema } from "./db/schema.js";
import type { PaymentProvider } from "./domain/provider.js";
import { createSimulatedProvider } from "./domain/simulator.js";
import { onPaymentRequested, producedEvents } from "./events.js";
import { countingProviderCalls } from "./provider-calls.js";
import { paymentRpc } from "./rpc.js";
import { createChargeStore, createPaymentStore } from "./store.js";

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
      const bus = eventBus(producedEvents);
      const charger = createCharger({
        provider,
        store: createChargeStore(database.db, bus),
        logger: logger.child({ component: "charger" }),
        pollIntervalMs: config.PAYMENT_CHARGE_POLL_MS,
        stopGraceMs: config.SHUTDOWN_GRACE_MS,
      });
      return {
        rpc: [paymentRpc(createPaymentStore(database.db))],
        events: { bus, consumes: [onPaymentRequested(charger, logger)] },
        // Charges left pending by a crash are taken over as soon as the database is usable.
        onDatabaseReady: async () => charger.start(),
        onClose: () => charger.stop(),
        // Serves the outbox's admin routes (dead events, re-drive), which need admin tokens.
        verifier: createTokenVerifier(tokenVerifierOptions(config)),
      };
    },
  };
}

export const paymentService = definePaymentService();
