import type { Money } from "./money.js";

export interface ChargeRequest {
  orderId: string;
  amount: Money;
  /** The customer's tokenised card, as the checkout collected it. */
  paymentToken: string;
  /** Charging twice with the same key charges once; the payment service uses the order id. */
  idempotencyKey: string;
}

/** The provider's final word on a charge. */
export type ChargeResult =
  | { outcome: "captured"; reference: string }
  | { outcome: "declined"; reason: string };

/**
 * A payment provider (card processor). Implementations must be idempotent per idempotencyKey:
 * the payment service may charge again after a crash or a rolled-back transaction, and relies
 * on the key so that the customer is still charged once.
 */
export interface PaymentProvider {
  /** Throws TransientProviderError when the charge may succeed if tried again later. */
  charge(request: ChargeRequest): Promise<ChargeResult>;
}

/** The provider could not decide now (outage, timeout); the same charge may be retried. */
export class TransientProviderError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TransientProviderError";
  }
}
