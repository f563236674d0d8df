export { currencyPattern, formatMoney, sameMoney } from "@thinmesh/platform";

/** The most one amount may hold, as the Money contract allows (shop.common.v1.Money). */
export const maxAmountMinor = 100_000_000_000n;
