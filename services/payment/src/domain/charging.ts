import type { ChargeStore, NewPayment, PendingCharge } from "./payment.js";
import { paymentOf } from "./payments.js";
import { type PaymentProvider, TransientProviderError } from "./provider.js";

export interface RetryPolicy {
  baseBackoffMs: number;
  maxBackoffMs: number;
}

export type ChargeOutcome =
  /** The provider decided and the payment is settled (with its outcome event). */
  | { kind: "settled"; payment: NewPayment }
  /** The provider decided, but another process had settled the charge already. */
  | { kind: "settled elsewhere"; payment: NewPayment }
  /** The provider could not decide now; the charge is due again after retryInMs. */
  | { kind: "retry"; retryInMs: number; error: unknown; transient: boolean };

/**
 * One attempt at a pending charge, outside any database transaction: call the provider with
 * the order id as idempotency key, then record its final answer in one transaction. Until the
 * provider decides, the charge stays pending: retrying a provider that could not answer is
 * the payment service's own business (it alone knows the charge is safe to repeat), so it is
 * due again after a backoff. A crash anywhere in between leaves it pending too, and whoever
 * takes it over charges with the same key: the customer is charged once.
 */
export async function chargeOnce(
  provider: PaymentProvider,
  store: ChargeStore,
  charge: PendingCharge,
  policy: RetryPolicy,
): Promise<ChargeOutcome> {
  let payment: NewPayment;
  try {
    const result = await provider.charge({
      orderId: charge.orderId,
      amount: charge.amount,
      paymentToken: charge.paymentToken,
      idempotencyKey: charge.orderId,
    });
    payment = paymentOf(charge, result);
  } catch (error) {
    // Only the provider can decline a charge. Anything else it throws (a bug, a response it
    // cannot parse) is retried like an outage, and logged loudly by the caller.
    const retryInMs = backoffMs(charge.attempts, policy);
    await store.retryLater(charge.id, retryInMs, (error as Error).message ?? String(error));
    return { kind: "retry", retryInMs, error, transient: error instanceof TransientProviderError };
  }
  const settled = await store.settle(payment);
  return { kind: settled ? "settled" : "settled elsewhere", payment };
}

/** Exponential backoff with jitter after the given attempt: about base, 2×base, … up to max. */
export function backoffMs(attempts: number, policy: RetryPolicy): number {
  const delay = Math.min(
    policy.maxBackoffMs,
    policy.baseBackoffMs * 2 ** Math.max(0, attempts - 1),
  );
  return Math.round(delay * (0.5 + Math.random() / 2));
}
