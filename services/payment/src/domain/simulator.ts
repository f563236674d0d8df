import { createHash } from "node:crypto";
import { formatMoney } from "./money.js";
import {
  type ChargeRequest,
  type ChargeResult,
  type PaymentProvider,
  TransientProviderError,
} from "./provider.js";

/**
 * Payment tokens the simulator treats specially, for tests and demos (any other token is a
 * card that works):
 * - tok_test_declined: the card is declined ("card declined");
 * - tok_test_flaky: the first 2 attempts per order fail transiently, then the charge captures.
 */
export const testTokens = {
  declined: "tok_test_declined",
  flaky: "tok_test_flaky",
} as const;

/** Transient failures of every order paid with tok_test_flaky before it captures. */
export const flakyTokenFailures = 2;

export interface SimulatorOptions {
  /** Amounts above this (in minor units, whatever the currency) are declined. */
  declineAboveMinor: bigint;
  /** Every order's first N charge attempts fail transiently (PAYMENT_SIMULATOR_TRANSIENT_FAILURES). */
  transientFailures: number;
}

// Remembered outcomes and attempt counts are bounded, so a long demo does not grow forever.
const rememberAtMost = 100_000;

/**
 * The default provider: deterministic, in memory, no network. Decisions follow from the
 * request alone (see decideCharge), and the reference from the idempotency key, so a repeated
 * charge gets the same answer even after a restart. Attempt counts live in this process only.
 */
export function createSimulatedProvider(options: SimulatorOptions): PaymentProvider {
  const attemptsByOrder = new Map<string, number>();
  const resultsByKey = new Map<string, ChargeResult>();
  return {
    async charge(request) {
      // An idempotent provider answers a repeated key with the first result, whatever else
      // the repeated request says.
      const settled = resultsByKey.get(request.idempotencyKey);
      if (settled) return settled;
      const attempt = (attemptsByOrder.get(request.orderId) ?? 0) + 1;
      remember(attemptsByOrder, request.orderId, attempt);
      const failures = transientFailuresFor(request, options);
      if (attempt <= failures) {
        throw new TransientProviderError(
          `simulated provider outage (attempt ${attempt} of ${failures} that fail for order ${request.orderId})`,
        );
      }
      const result = decideCharge(request, options);
      remember(resultsByKey, request.idempotencyKey, result);
      attemptsByOrder.delete(request.orderId);
      return result;
    },
  };
}

/** How many of an order's attempts fail before the simulator decides: the most any rule asks. */
export function transientFailuresFor(
  request: Pick<ChargeRequest, "paymentToken">,
  options: Pick<SimulatorOptions, "transientFailures">,
): number {
  const byToken = request.paymentToken === testTokens.flaky ? flakyTokenFailures : 0;
  return Math.max(options.transientFailures, byToken);
}

/** The simulator's final answer for a charge, once it no longer fails transiently. */
export function decideCharge(
  request: ChargeRequest,
  options: Pick<SimulatorOptions, "declineAboveMinor">,
): ChargeResult {
  if (request.paymentToken === testTokens.declined) {
    return { outcome: "declined", reason: "card declined" };
  }
  if (request.amount.amountMinor > options.declineAboveMinor) {
    const limit = {
      currencyCode: request.amount.currencyCode,
      amountMinor: options.declineAboveMinor,
    };
    return { outcome: "declined", reason: `amount exceeds the limit of ${formatMoney(limit)}` };
  }
  return { outcome: "captured", reference: simulatedReference(request.idempotencyKey) };
}

/** A provider reference derived from the idempotency key: the same key, the same reference. */
export function simulatedReference(idempotencyKey: string): string {
  return `sim_${createHash("sha256").update(idempotencyKey).digest("hex").slice(0, 24)}`;
}

function remember<V>(map: Map<string, V>, key: string, value: V) {
  map.delete(key);
  map.set(key, value);
  // Maps iterate in insertion order: the first key is the one touched longest ago.
  if (map.size > rememberAtMost) map.delete(map.keys().next().value!);
}
