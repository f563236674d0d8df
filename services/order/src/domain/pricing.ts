import { failedPrecondition, invalidArgument, notFound } from "@thinmesh/platform";
import { formatMoney, maxAmountMinor, sameMoney } from "./money.js";
import type { Money, OrderItem } from "./order.js";
import type { RequestedItem } from "./place-order-request.js";

/** A product as the catalog prices it now. */
export interface CatalogProduct {
  id: string;
  sku: string;
  name: string;
  price: Money;
}

/** The catalog's answer for a set of ids: the products it has, and the ids it does not know. */
export interface ProductLookup {
  products: CatalogProduct[];
  missingIds: string[];
}

/** The catalog, as PlaceOrder needs it. */
export interface ProductCatalog {
  findProducts(ids: string[]): Promise<ProductLookup>;
}

export interface PricedOrder {
  items: OrderItem[];
  total: Money;
}

/**
 * Prices the requested items with the catalog's current prices and snapshots sku, name and
 * unit price into the order, so that later catalog changes do not rewrite what was bought.
 * Fails when a product does not exist, when a price differs from the one the customer saw,
 * or when the items are priced in more than one currency.
 */
export function priceItems(items: RequestedItem[], lookup: ProductLookup): PricedOrder {
  const byId = new Map(lookup.products.map((p) => [p.id.toLowerCase(), p]));
  const missing = items.map((item) => item.productId).filter((id) => !byId.has(id.toLowerCase()));
  if (missing.length > 0) {
    throw notFound(
      missing.length === 1
        ? `product ${missing[0]} does not exist`
        : `products ${missing.join(", ")} do not exist`,
    );
  }
  const products = items.map((item) => byId.get(item.productId.toLowerCase())!);

  const currencies = [...new Set(products.map((p) => p.price.currencyCode))];
  if (currencies.length > 1) {
    const priced = products.map((p) => `${p.sku} in ${p.price.currencyCode}`).join(", ");
    throw invalidArgument(
      `the items are priced in different currencies (${priced}); place one order per currency`,
    );
  }

  const changed = items.flatMap((item, index) => {
    const expected = item.expectedUnitPrice;
    const product = products[index]!;
    if (!expected || sameMoney(expected, product.price)) return [];
    return [`${product.sku} costs ${formatMoney(product.price)} now, not ${formatMoney(expected)}`];
  });
  if (changed.length > 0) {
    throw failedPrecondition(
      `prices changed since you saw them: ${changed.join("; ")}; review the order and place it again`,
    );
  }

  const currencyCode = currencies[0]!;
  const orderItems: OrderItem[] = items.map((item, index) => {
    const product = products[index]!;
    return {
      productId: product.id.toLowerCase(),
      sku: product.sku,
      name: product.name,
      quantity: item.quantity,
      unitPrice: { ...product.price },
      lineTotal: { currencyCode, amountMinor: product.price.amountMinor * BigInt(item.quantity) },
    };
  });
  const total: Money = {
    currencyCode,
    amountMinor: orderItems.reduce((sum, item) => sum + item.lineTotal.amountMinor, 0n),
  };
  if (total.amountMinor > maxAmountMinor) {
    throw invalidArgument(
      `the order total ${formatMoney(total)} is more than one order may hold (${formatMoney({ currencyCode, amountMinor: maxAmountMinor })}); split it into several orders`,
    );
  }
  return { items: orderItems, total };
}
