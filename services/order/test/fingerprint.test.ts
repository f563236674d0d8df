// The request fingerprint decides whether a PlaceOrder with a known idempotency key is a retry
// (same order back) or a different order (already_exists).
import { describe, expect, it } from "vitest";
import { requestFingerprint } from "../src/domain/fingerprint.js";

const a = "2b0f7bde-3c8e-4b8e-9f3a-0d6a1c2e4f50";
const b = "9d4e1f22-5a6b-4c7d-8e9f-a0b1c2d3e4f5";
const request = {
  items: [
    { productId: a, quantity: 2 },
    { productId: b, quantity: 1, expectedUnitPrice: { currencyCode: "EUR", amountMinor: 990n } },
  ],
  paymentToken: "tok_test_visa",
};

describe("requestFingerprint", () => {
  it("is a sha256 hex digest, the same every time for the same request", () => {
    const first = requestFingerprint(request);
    expect(first).toMatch(/^[0-9a-f]{64}$/);
    expect(requestFingerprint(structuredClone(request))).toBe(first);
  });

  it("ignores the order of the items and the case of product ids", () => {
    const reordered = { ...request, items: [...request.items].reverse() };
    const upper = {
      ...request,
      items: request.items.map((item) => ({ ...item, productId: item.productId.toUpperCase() })),
    };
    expect(requestFingerprint(reordered)).toBe(requestFingerprint(request));
    expect(requestFingerprint(upper)).toBe(requestFingerprint(request));
  });

  it.each([
    ["a quantity", { items: [{ ...request.items[0]!, quantity: 3 }, request.items[1]!] }],
    ["a product", { items: [{ ...request.items[0]!, productId: b }] }],
    [
      "an item more",
      { items: [...request.items, { productId: crypto.randomUUID(), quantity: 1 }] },
    ],
    ["an item less", { items: [request.items[0]!] }],
    ["the payment token", { paymentToken: "tok_test_declined" }],
    [
      "the expected price",
      {
        items: [
          request.items[0]!,
          { ...request.items[1]!, expectedUnitPrice: { currencyCode: "EUR", amountMinor: 991n } },
        ],
      },
    ],
    [
      "the expected currency",
      {
        items: [
          request.items[0]!,
          { ...request.items[1]!, expectedUnitPrice: { currencyCode: "USD", amountMinor: 990n } },
        ],
      },
    ],
    ["an expected price left out", { items: [request.items[0]!, { productId: b, quantity: 1 }] }],
  ])("changes with %s", (_what, change) => {
    expect(requestFingerprint({ ...request, ...change })).not.toBe(requestFingerprint(request));
  });

  it("does not confuse quantities and prices across items (canonical, not concatenated)", () => {
    const one = {
      items: [
        { productId: a, quantity: 11 },
        { productId: b, quantity: 1 },
      ],
      paymentToken: "tok_x",
    };
    const two = {
      items: [
        { productId: a, quantity: 1 },
        { productId: b, quantity: 11 },
      ],
      paymentToken: "tok_x",
    };
    expect(requestFingerprint(one)).not.toBe(requestFingerprint(two));
  });
});
