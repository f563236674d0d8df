// The double-entry ledger of a capture.
import { describe, expect, it } from "vitest";
import {
  accountCredit,
  captureEntries,
  customerAccount,
  ledgerBalance,
  merchantAccount,
} from "../src/domain/ledger.js";

const amount = { currencyCode: "EUR", amountMinor: 12_900n };

describe("a capture's ledger entries", () => {
  it("debit the customer and credit the merchant with the amount", () => {
    expect(captureEntries({ userId: "u-1", amount })).toEqual([
      { kind: "capture", account: "customer:u-1", direction: "debit", amount },
      { kind: "capture", account: "merchant", direction: "credit", amount },
    ]);
  });

  it("balance to zero, and the merchant is credited exactly the amount", () => {
    const entries = captureEntries({ userId: "u-1", amount });
    expect(ledgerBalance(entries)).toBe(0n);
    expect(accountCredit(entries, merchantAccount)).toBe(12_900n);
    expect(accountCredit(entries, customerAccount("u-1"))).toBe(-12_900n);
  });

  it("stay balanced across many payments", () => {
    const entries = [1n, 50_000n, 999n].flatMap((minor, i) =>
      captureEntries({ userId: `u-${i}`, amount: { currencyCode: "EUR", amountMinor: minor } }),
    );
    expect(ledgerBalance(entries)).toBe(0n);
    expect(accountCredit(entries, merchantAccount)).toBe(51_000n);
  });

  it("detects an unbalanced set and refuses to add currencies together", () => {
    const [debit] = captureEntries({ userId: "u-1", amount });
    expect(ledgerBalance([debit!])).toBe(12_900n);
    const dollars = captureEntries({
      userId: "u-2",
      amount: { currencyCode: "USD", amountMinor: 1n },
    });
    expect(() => ledgerBalance([debit!, ...dollars])).toThrow(/EUR, USD/);
  });
});
