import { createHash } from "node:crypto";
import type { PlaceOrderInput } from "./place-order-request.js";

/**
 * What a PlaceOrder request asks for, as a sha256 hex digest. A retry with the same
 * idempotency key must carry the same fingerprint to get the order back; anything else is a
 * different order. The canonical form ignores the order of the items (the same products in
 * the same quantities are the same order) and the case of the product ids. The idempotency
 * key is not part of it: it is what the fingerprint is compared under.
 */
export function requestFingerprint(
  request: Pick<PlaceOrderInput, "items" | "paymentToken">,
): string {
  const items = request.items
    .map((item) => [
      item.productId.toLowerCase(),
      item.quantity,
      item.expectedUnitPrice
        ? [item.expectedUnitPrice.currencyCode, item.expectedUnitPrice.amountMinor.toString()]
        : null,
    ])
    .sort(([a], [b]) =>
      (a as string) < (b as string) ? -1 : (a as string) > (b as string) ? 1 : 0,
    );
  // Versioned, so that a future change of the canonical form cannot match an old digest.
  const canonical = JSON.stringify({ v: 1, items, paymentToken: request.paymentToken });
  return createHash("sha256").update(canonical).digest("hex");
}
