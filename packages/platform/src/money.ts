/** An amount in a currency's minor units (cents), never a float (shop.common.v1.Money). */
export interface Money {
  /** ISO 4217, upper case, for example "EUR". */
  currencyCode: string;
  amountMinor: bigint;
}

export const currencyPattern = /^[A-Z]{3}$/;

export const sameMoney = (a: Money, b: Money) =>
  a.currencyCode === b.currencyCode && a.amountMinor === b.amountMinor;

/**
 * "EUR 12.90" for people reading an error message or a timeline. The number of decimals is the
 * currency's (JPY has none); amounts stay bigint all the way, never a float.
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

// Building an Intl.NumberFormat costs about a third of a millisecond; ask once per currency.
const digitsByCurrency = new Map<string, number>();

function fractionDigits(currencyCode: string): number {
  let digits = digitsByCurrency.get(currencyCode);
  if (digits === undefined) {
    try {
      digits =
        new Intl.NumberFormat("en", { style: "currency", currency: currencyCode }).resolvedOptions()
          .maximumFractionDigits ?? 2;
    } catch {
      digits = 2;
    }
    // Bounded: currency codes are validated (three letters) before anything is formatted.
    if (digitsByCurrency.size < 1000) digitsByCurrency.set(currencyCode, digits);
  }
  return digits;
}
