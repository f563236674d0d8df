import type { Money } from "./money.js";

/**
 * The ledger is double-entry: every movement of money is a set of entries whose debits equal
 * their credits, so the ledger as a whole always balances to zero. A capture moves the amount
 * from the customer to the merchant:
 *
 *   debit  customer:<user id>   amount
 *   credit merchant             amount
 *
 * Amounts are positive; the direction says which side of the account they are on. Captured
 * money is what has been credited to the merchant account.
 */
export type LedgerDirection = "debit" | "credit";

/** What the movement was: only captures exist today (refunds would add a kind). */
export type LedgerKind = "capture";

export interface LedgerEntry {
  kind: LedgerKind;
  account: string;
  direction: LedgerDirection;
  amount: Money;
}

export const merchantAccount = "merchant";
export const customerAccount = (userId: string) => `customer:${userId}`;

/** The entries recording a captured payment. */
export function captureEntries(payment: { userId: string; amount: Money }): LedgerEntry[] {
  return [
    {
      kind: "capture",
      account: customerAccount(payment.userId),
      direction: "debit",
      amount: payment.amount,
    },
    { kind: "capture", account: merchantAccount, direction: "credit", amount: payment.amount },
  ];
}

/** Debits minus credits, in minor units: zero for a balanced set of entries. */
export function ledgerBalance(entries: readonly LedgerEntry[]): bigint {
  return sumOf(entries, (entry) =>
    entry.direction === "debit" ? entry.amount.amountMinor : -entry.amount.amountMinor,
  );
}

/** Credits minus debits on one account, in minor units. */
export function accountCredit(entries: readonly LedgerEntry[], account: string): bigint {
  return sumOf(
    entries.filter((entry) => entry.account === account),
    (entry) =>
      entry.direction === "credit" ? entry.amount.amountMinor : -entry.amount.amountMinor,
  );
}

function sumOf(entries: readonly LedgerEntry[], signed: (entry: LedgerEntry) => bigint): bigint {
  const currencies = new Set(entries.map((entry) => entry.amount.currencyCode));
  // Adding euros to dollars gives a number that means nothing.
  if (currencies.size > 1) throw new Error(`cannot sum entries in ${[...currencies].join(", ")}`);
  return entries.reduce((sum, entry) => sum + signed(entry), 0n);
}
