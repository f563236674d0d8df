import { randomUUID } from "node:crypto";
import { invalidArgument, notFound, unavailable } from "@thinmesh/platform";
import { captureEntries } from "./ledger.js";
import { currencyPattern, type Money } from "./money.js";
import {
  isUuid,
  type NewPayment,
  type Payment,
  type PaymentRequest,
  type PaymentStore,
} from "./payment.js";
import {
  type ChargeRequest,
  type ChargeResult,
  type PaymentProvider,
  TransientProviderError,
} from "./provider.js";

export type PaymentRequestOutcome =
  | { recorded: true; payment: NewPayment }
  /** The order already had a payment (an earlier event, or a delivery racing this one). */
  | { recorded: false };

/**
 * Charges an order once. Runs inside the transaction that records the event as handled, so:
 * - an order that already has a payment is left alone (another event asked first);
 * - a transient provider failure becomes unavailable, which rolls the whole transaction back
 *   (the event too) and makes the sender retry later with backoff;
 * - the charge uses the order id as idempotency key, so charging again after a rollback or
 *   racing another delivery costs the customer nothing twice;
 * - the UNIQUE order id decides between racing deliveries: the loser records nothing.
 */
export async function handlePaymentRequest(
  store: PaymentStore,
  provider: PaymentProvider,
  request: PaymentRequest,
): Promise<PaymentRequestOutcome> {
  const amount = checkPaymentRequest(request);
  if (await store.findByOrderId(request.orderId)) return { recorded: false };
  const result = await chargeOrRetryLater(provider, {
    orderId: request.orderId,
    amount,
    paymentToken: request.paymentToken,
    idempotencyKey: request.orderId,
  });
  const payment = paymentOf({ ...request, amount }, result);
  const recorded = await store.insertIfFirstForOrder(payment);
  return recorded ? { recorded: true, payment } : { recorded: false };
}

/** The payment recording the provider's final answer; only a capture moves money. */
function paymentOf(request: PaymentRequest & { amount: Money }, result: ChargeResult): NewPayment {
  const identity = { id: randomUUID(), orderId: request.orderId, userId: request.userId };
  if (result.outcome === "declined") {
    return {
      ...identity,
      status: "DECLINED",
      amount: request.amount,
      providerReference: undefined,
      declineReason: result.reason,
      ledger: [],
    };
  }
  return {
    ...identity,
    status: "CAPTURED",
    amount: request.amount,
    providerReference: result.reference,
    declineReason: undefined,
    ledger: captureEntries({ userId: request.userId, amount: request.amount }),
  };
}

async function chargeOrRetryLater(
  provider: PaymentProvider,
  request: ChargeRequest,
): Promise<ChargeResult> {
  try {
    return await provider.charge(request);
  } catch (error) {
    if (error instanceof TransientProviderError) {
      throw unavailable(
        `the payment provider cannot charge order ${request.orderId} right now (${error.message}); deliver the event again later`,
      );
    }
    throw error;
  }
}

/**
 * A request that breaks the contract is a bug in the sender, not a reason to decline:
 * invalid_argument makes the sender park the event where an operator sees it.
 */
function checkPaymentRequest(request: PaymentRequest): Money {
  const problems: string[] = [];
  if (!isUuid(request.orderId)) problems.push(`order_id must be a UUID, got "${request.orderId}"`);
  if (!request.userId) problems.push("user_id is required");
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

/** The payment of an order with its ledger entries. */
export async function getPayment(store: PaymentStore, orderId: string): Promise<Payment> {
  if (!isUuid(orderId)) throw invalidArgument(`order_id must be a UUID, got "${orderId}"`);
  const payment = await store.findByOrderId(orderId);
  if (!payment) throw notFound(`no payment for order "${orderId}"`);
  return payment;
}
