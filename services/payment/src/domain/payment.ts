import type { LedgerEntry } from "./ledger.js";
import type { Money } from "./money.js";

export type PaymentStatus = "CAPTURED" | "DECLINED";

/** What the order service asks for (a PaymentRequested event), before it is checked. */
export interface PaymentRequest {
  orderId: string;
  userId: string;
  amount: Money | undefined;
  paymentToken: string;
}

/** The outcome of charging one order: there is at most one per order. */
export interface NewPayment {
  id: string;
  orderId: string;
  userId: string;
  status: PaymentStatus;
  amount: Money;
  /** The provider's reference for a captured charge. */
  providerReference: string | undefined;
  /** Why the provider declined, for a declined charge. */
  declineReason: string | undefined;
  /** Empty for a declined payment: no money moved. */
  ledger: LedgerEntry[];
}

export interface RecordedLedgerEntry extends LedgerEntry {
  createdAt: Date;
}

export interface Payment extends NewPayment {
  ledger: RecordedLedgerEntry[];
  createdAt: Date;
}

/**
 * Persistence the payment service needs. "At most one payment per order" is a UNIQUE
 * constraint behind this interface, so concurrent deliveries cannot break it.
 */
export interface PaymentStore {
  /** The order's payment with its ledger entries, if it has one. */
  findByOrderId(orderId: string): Promise<Payment | undefined>;
  /**
   * Records the payment and its ledger entries unless the order already has a payment (then
   * writes nothing and resolves to false). Waits for a concurrent insert for the same order.
   */
  insertIfFirstForOrder(payment: NewPayment): Promise<boolean>;
}

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
export const isUuid = (value: string) => uuidPattern.test(value);
