import type { Logger } from "@thinmesh/platform";
import { Counter, type Registry } from "prom-client";
import { type PaymentProvider, TransientProviderError } from "./domain/provider.js";

/**
 * The provider with every call counted (`payment_provider_calls_total` by outcome) and logged
 * with its order id, so that operators and the fault tests can see how often an order reached
 * the provider: once, unless the provider failed transiently (issue 13, item 8). The line is
 * written before the call: a call cut short by a crash still counts.
 */
export function countingProviderCalls(
  provider: PaymentProvider,
  registry: Registry,
  logger: Logger,
): PaymentProvider {
  const calls = new Counter({
    name: "payment_provider_calls_total",
    help: "Charges sent to the payment provider, by outcome (captured, declined, transient_error, error)",
    labelNames: ["outcome"],
    registers: [registry],
  });
  return {
    async charge(request) {
      logger.info({ orderId: request.orderId }, "calling the payment provider");
      try {
        const result = await provider.charge(request);
        calls.inc({ outcome: result.outcome });
        return result;
      } catch (error) {
        calls.inc({
          outcome: error instanceof TransientProviderError ? "transient_error" : "error",
        });
        throw error;
      }
    },
  };
}
