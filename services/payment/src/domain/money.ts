/** An amount in a currency's minor units (cents), never a float. */
export interface Money {
  /** ISO 4217, upper case, for example "EUR". */
  currencyCode: string;
  amountMinor: bigint;
}

export const currencyPattern = /^[A-Z]{3}$/;

/**
 * "500.00 EUR", "5000 JPY": minor units shown in major units with the currency's own number of
 * decimals (from Intl), in integer arithmetic so large amounts stay exact.
 */
export function formatMoney({ currencyCode, amountMinor }: Money): string {
  const decimals = BigInt(
    new Intl.NumberFormat("en", { style: "currency", currency: currencyCode }).resolvedOptions()
      .maximumFractionDigits ?? 2,
  );
  const sign = amountMinor < 0n ? "-" : "";
  const absolute = amountMinor < 0n ? -amountMinor : amountMinor;
  if (decimals === 0n) return `${sign}${absolute} ${currencyCode}`;
  const unit = 10n ** decimals;
  const fraction = (absolute % unit).toString().padStart(Number(decimals), "0");
  return `${sign}${absolute / unit}.${fraction} ${currencyCode}`;
}
