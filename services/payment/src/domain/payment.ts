import type { LedgerEntry } from "./ledger.js";
import type { Money } from "./money.js";

export type PaymentStatus = "PENDING" | "CAPTURED" | "DECLINED";
/** The provider's final answer: a payment in these states never changes again. */
export type SettledStatus = Exclude<PaymentStatus, "PENDING">;

/** What the order service asks for (a PaymentRequested event), before it is checked. */
export interface PaymentRequest {
  orderId: string;
  userId: string;
  amount: Money | undefined;
  paymentToken: string;
}

/**
 * A charge to make: the intent recorded from a PaymentRequested, committed before the provider
 * is called so that it survives a crash. The order id is the provider's idempotency key.
 */
export interface PendingCharge {
  id: string;
  orderId: string;
  userId: string;
  amount: Money;
  paymentToken: string;
  /** Calls to the provider including the one about to be made. */
  attempts: number;
  /** The trace of the step that asked for the payment (W3C headers), kept for the charge. */
  trace: { traceparent: string; tracestate: string };
}

/** The settled outcome of charging one order: there is at most one per order. */
export interface NewPayment {
  id: string;
  orderId: string;
  userId: string;
  status: SettledStatus;
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

/** An order's payment as stored: pending (being charged) or settled. */
export interface Payment extends Omit<NewPayment, "status"> {
  status: PaymentStatus;
  ledger: RecordedLedgerEntry[];
  createdAt: Date;
}

export interface SettledPayment extends Payment {
  status: SettledStatus;
}

/**
 * What handling a PaymentRequested needs, in the transaction that records the event as
 * handled. "At most one payment per order" is a UNIQUE constraint behind this interface, so
 * concurrent deliveries cannot break it.
 */
export interface PaymentStore {
  /** The order's payment with its ledger entries, if it has one. */
  findByOrderId(orderId: string): Promise<Payment | undefined>;
  /**
   * Records the charge as PENDING, leased to this process for leaseMs (it charges it once
   * the transaction commits), unless the order already has a payment: then writes nothing
   * and resolves to false. Waits for a concurrent insert for the same order.
   */
  insertIntent(charge: PendingCharge, leaseMs: number): Promise<boolean>;
}

/**
 * What charging needs, outside any transaction of the request's: each method is one short
 * transaction of its own, and the provider is called between them.
 */
export interface ChargeStore {
  /** Pending charges that are due and leased to nobody, leased now to this process. */
  claimDue(limit: number, leaseMs: number): Promise<PendingCharge[]>;
  /** Extends this process's leases on pending charges. */
  renewLeases(ids: string[], leaseMs: number): Promise<void>;
  /** Gives up leases on charges not started, for whichever process claims next. */
  releaseLeases(ids: string[]): Promise<void>;
  /** After a transient provider failure: due again in delayMs, leased to nobody. */
  retryLater(id: string, delayMs: number, error: string): Promise<void>;
  /**
   * In one transaction: the charge becomes the payment's final state, with its ledger
   * entries and the outcome event for the order service. False, with nothing written, when
   * it was settled already (by another process that took over the charge).
   */
  settle(payment: NewPayment): Promise<boolean>;
}

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
export const isUuid = (value: string) => uuidPattern.test(value);
