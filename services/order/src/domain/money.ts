import type { Money } from "./order.js";

/** The most one amount may hold, as the Money contract allows (shop.common.v1.Money). */
export const maxAmountMinor = 100_000_000_000n;

export const currencyPattern = /^[A-Z]{3}$/;

export const sameMoney = (a: Money, b: Money) =>
  a.currencyCode === b.currencyCode && a.amountMinor === b.amountMinor;

/**
 * "EUR 12.90" for people reading an error message. The number of decimals is the currency's
 * (JPY has none); amounts stay bigint all the way, never a float.
 */
export function formatMoney(money: Money): string {
  const digits = fractionDigits(money.currencyCode);
  const negative = money.amountMinor < 0n;
  const units = (negative ? -money.amountMinor : money.amountMinor).toString();
  if (digits === 0) return `${money.currencyCode} ${negative ? "-" : ""}${units}`;
  const padded = units.padStart(digits + 1, "0");
  const whole = padded.slice(0, -digits);
  const fraction = padded.slice(-digits);
  return `${money.currencyCode} ${negative ? "-" : ""}${whole}.${fraction}`;
}

function fractionDigits(currencyCode: string): number {
  try {
    return (
      new Intl.NumberFormat("en", { style: "currency", currency: currencyCode }).resolvedOptions()
        .maximumFractionDigits ?? 2
    );
  } catch {
    return 2;
  }
}
