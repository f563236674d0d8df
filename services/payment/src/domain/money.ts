export { currencyPattern, formatMoney, type Money } from "@thinmesh/platform";
