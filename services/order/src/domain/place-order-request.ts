import { invalidArgument } from "@thinmesh/platform";
import { currencyPattern, maxAmountMinor } from "./money.js";
import { isUuid, type Money } from "./order.js";

/** One item as the customer asks for it. */
export interface RequestedItem {
  productId: string;
  quantity: number;
  /** The unit price the customer saw; the order fails if the catalog now says otherwise. */
  expectedUnitPrice?: Money | undefined;
}

export interface PlaceOrderInput {
  idempotencyKey: string;
  items: RequestedItem[];
  paymentToken: string;
}

// The same limits as the contract (order.proto): its validation rules reject a bad request
// before it gets here; these keep the domain correct on its own.
export const maxItems = 50;
export const maxQuantity = 100;
export const idempotencyKeyLength = { min: 8, max: 128 } as const;
export const paymentTokenPattern = /^tok_[a-z0-9_]{1,60}$/;

/**
 * Checks a PlaceOrder request and returns it normalised (product ids in lower case, since
 * UUIDs are case-insensitive). Each product may appear once: two lines for one product would
 * make "how many did you want" ambiguous.
 */
export function checkPlaceOrderInput(input: PlaceOrderInput): PlaceOrderInput {
  const key = input.idempotencyKey;
  if (key.length < idempotencyKeyLength.min || key.length > idempotencyKeyLength.max) {
    throw invalidArgument(
      `idempotency_key must be ${idempotencyKeyLength.min} to ${idempotencyKeyLength.max} characters (a UUID is a good choice), got ${key.length}`,
    );
  }
  if (!paymentTokenPattern.test(input.paymentToken)) {
    throw invalidArgument(
      `payment_token must be a token from the payment provider (tok_...), got "${input.paymentToken}"`,
    );
  }
  if (input.items.length < 1 || input.items.length > maxItems) {
    throw invalidArgument(`items must hold 1 to ${maxItems} items, got ${input.items.length}`);
  }
  const firstIndexOf = new Map<string, number>();
  const items = input.items.map((item, index) => {
    const field = `items[${index}]`;
    if (!isUuid(item.productId)) {
      throw invalidArgument(`${field}.product_id must be a UUID, got "${item.productId}"`);
    }
    const productId = item.productId.toLowerCase();
    const earlier = firstIndexOf.get(productId);
    if (earlier !== undefined) {
      throw invalidArgument(
        `${field}.product_id: product ${productId} is already in items[${earlier}]; list each product once with the quantity you want`,
      );
    }
    firstIndexOf.set(productId, index);
    if (!Number.isInteger(item.quantity) || item.quantity < 1 || item.quantity > maxQuantity) {
      throw invalidArgument(
        `${field}.quantity must be a whole number from 1 to ${maxQuantity}, got ${item.quantity}`,
      );
    }
    const expected = item.expectedUnitPrice;
    if (expected) {
      if (!currencyPattern.test(expected.currencyCode)) {
        throw invalidArgument(
          `${field}.expected_unit_price.currency_code must be an ISO 4217 code like "EUR", got "${expected.currencyCode}"`,
        );
      }
      if (expected.amountMinor < 0n || expected.amountMinor > maxAmountMinor) {
        throw invalidArgument(
          `${field}.expected_unit_price.amount_minor must be from 0 to ${maxAmountMinor}, got ${expected.amountMinor}`,
        );
      }
    }
    return { productId, quantity: item.quantity, expectedUnitPrice: expected };
  });
  return { idempotencyKey: key, items, paymentToken: input.paymentToken };
}
