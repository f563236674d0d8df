import { randomUUID } from "node:crypto";
import { failedPrecondition, invalidArgument, notFound } from "@thinmesh/platform";
import { captureEntries } from "./ledger.js";
import { currencyPattern, formatMoney, type Money } from "./money.js";
import {
  isUuid,
  type NewPayment,
  type Payment,
  type PaymentRequest,
  type PaymentStatus,
  type PaymentStore,
  type PendingCharge,
  type SettledPayment,
} from "./payment.js";
import type { ChargeResult } from "./provider.js";

export type PaymentRequestOutcome =
  /** The charge is recorded as PENDING; charge it once the transaction commits. */
  | { kind: "recorded"; charge: PendingCharge }
  /** The order's payment was asked for already, for the same amount (a repeated request). */
  | { kind: "repeated"; status: PaymentStatus }
  /** The order's payment was asked for already, for something else: one of them is false. */
  | { kind: "refused"; reason: string };

/**
 * Records an order's charge (the intent), in the transaction that records the event as
 * handled; the provider is called only after that commits (see chargeOnce). So a batch of
 * events rolled back and replayed, or an event delivered again, never reaches the provider.
 *
 * There is one payment per order, for the amount its request named: a second request for the
 * same order and the same amount and customer changes nothing; one for another amount or
 * customer is refused (a forged or broken request; the order refuses a capture of anything but
 * its total, so a smaller charge can never confirm it).
 */
export async function recordPaymentRequest(
  store: PaymentStore,
  request: PaymentRequest,
  options: { leaseMs: number; trace: PendingCharge["trace"] },
): Promise<PaymentRequestOutcome> {
  const amount = checkPaymentRequest(request);
  const charge: PendingCharge = {
    id: randomUUID(),
    orderId: request.orderId,
    userId: request.userId,
    amount,
    paymentToken: request.paymentToken,
    attempts: 1,
    trace: options.trace,
  };
  // Nearly every request is the first for its order: insert first, look only on a conflict.
  if (await store.insertIntent(charge, options.leaseMs)) return { kind: "recorded", charge };
  const existing = await store.findByOrderId(request.orderId);
  // Payments are never deleted, and the conflicting insert has committed.
  if (!existing) throw new Error(`the payment of order ${request.orderId} vanished`);
  const difference = differenceOf(existing, { ...request, amount });
  if (difference) {
    return {
      kind: "refused",
      reason: `order ${request.orderId} already has a payment request ${difference}; an order is charged once, for what it asked first`,
    };
  }
  return { kind: "repeated", status: existing.status };
}

function differenceOf(existing: Payment, request: PaymentRequest & { amount: Money }) {
  if (
    existing.amount.currencyCode !== request.amount.currencyCode ||
    existing.amount.amountMinor !== request.amount.amountMinor
  ) {
    return `for ${formatMoney(existing.amount)}, but this one asks for ${formatMoney(request.amount)}`;
  }
  if (existing.userId !== request.userId) return "from another customer";
  return undefined;
}

/** The payment recording the provider's final answer; only a capture moves money. */
export function paymentOf(charge: PendingCharge, result: ChargeResult): NewPayment {
  const identity = {
    id: charge.id,
    orderId: charge.orderId,
    userId: charge.userId,
    amount: charge.amount,
  };
  if (result.outcome === "declined") {
    return {
      ...identity,
      status: "DECLINED",
      providerReference: undefined,
      declineReason: result.reason,
      ledger: [],
    };
  }
  return {
    ...identity,
    status: "CAPTURED",
    providerReference: result.reference,
    declineReason: undefined,
    ledger: captureEntries({ userId: charge.userId, amount: charge.amount }),
  };
}

/**
 * A request that breaks the contract is a bug in the sender, not a reason to decline:
 * invalid_argument makes the sender park the event where an operator sees it.
 */
function checkPaymentRequest(request: PaymentRequest): Money {
  const problems: string[] = [];
  if (!isUuid(request.orderId)) problems.push(`order_id must be a UUID, got "${request.orderId}"`);
  if (!request.userId) problems.push("user_id is required");
  if (!request.paymentToken) problems.push("payment_token is required");
  const amount = request.amount;
  if (!amount) problems.push("amount is required");
  else {
    if (!currencyPattern.test(amount.currencyCode))
      problems.push(`amount.currency_code must be an ISO 4217 code, got "${amount.currencyCode}"`);
    if (amount.amountMinor <= 0n)
      problems.push(`amount.amount_minor must be positive, got ${amount.amountMinor}`);
  }
  if (problems.length > 0 || !amount) {
    throw invalidArgument(`invalid PaymentRequested: ${problems.join("; ")}`);
  }
  return amount;
}

/** The settled payment of an order with its ledger entries. */
export async function getPayment(store: PaymentStore, orderId: string): Promise<SettledPayment> {
  if (!isUuid(orderId)) throw invalidArgument(`order_id must be a UUID, got "${orderId}"`);
  const payment = await store.findByOrderId(orderId);
  if (!payment) throw notFound(`no payment for order "${orderId}"`);
  if (payment.status === "PENDING") {
    throw failedPrecondition(
      `the payment of order "${orderId}" is still being charged; ask again in a few seconds`,
    );
  }
  return payment as SettledPayment;
}
