// Pricing a request with the catalog's answer, the request checks before it, and the money
// formatting the error messages use.
import { randomUUID } from "node:crypto";
import { domainError } from "@thinmesh/platform/testing";
import { describe, expect, it } from "vitest";
import { formatMoney, maxAmountMinor } from "../src/domain/money.js";
import { checkPlaceOrderInput, type PlaceOrderInput } from "../src/domain/place-order-request.js";
import { type CatalogProduct, priceItems } from "../src/domain/pricing.js";

function product(overrides: Partial<CatalogProduct> = {}): CatalogProduct {
  return {
    id: randomUUID(),
    sku: `SKU-${randomUUID().slice(0, 6).toUpperCase()}`,
    name: "Mug",
    price: { currencyCode: "EUR", amountMinor: 1290n },
    ...overrides,
  };
}

describe("priceItems", () => {
  it("snapshots sku, name and unit price and totals the lines in minor units", () => {
    const mug = product({ price: { currencyCode: "EUR", amountMinor: 1290n } });
    const tote = product({ name: "Tote", price: { currencyCode: "EUR", amountMinor: 2499n } });
    const priced = priceItems(
      [
        { productId: tote.id, quantity: 3 },
        { productId: mug.id, quantity: 2 },
      ],
      { products: [mug, tote], missingIds: [] },
    );
    expect(priced.items).toEqual([
      {
        productId: tote.id,
        sku: tote.sku,
        name: "Tote",
        quantity: 3,
        unitPrice: { currencyCode: "EUR", amountMinor: 2499n },
        lineTotal: { currencyCode: "EUR", amountMinor: 7497n },
      },
      {
        productId: mug.id,
        sku: mug.sku,
        name: "Mug",
        quantity: 2,
        unitPrice: { currencyCode: "EUR", amountMinor: 1290n },
        lineTotal: { currencyCode: "EUR", amountMinor: 2580n },
      },
    ]);
    expect(priced.total).toEqual({ currencyCode: "EUR", amountMinor: 10077n });
  });

  it("keeps exact totals beyond what a float can hold", () => {
    const big = product({ price: { currencyCode: "EUR", amountMinor: 999_999_999n } });
    const priced = priceItems([{ productId: big.id, quantity: 100 }], {
      products: [big],
      missingIds: [],
    });
    expect(priced.total.amountMinor).toBe(99_999_999_900n);
  });

  it("accepts a matching expected price", () => {
    const mug = product();
    const priced = priceItems(
      [{ productId: mug.id, quantity: 1, expectedUnitPrice: { ...mug.price } }],
      { products: [mug], missingIds: [] },
    );
    expect(priced.total).toEqual(mug.price);
  });

  it("is not_found naming every product the catalog does not have", () => {
    const mug = product();
    const [x, y] = [randomUUID(), randomUUID()];
    const one = domainError(() =>
      priceItems([{ productId: x, quantity: 1 }], { products: [mug], missingIds: [x] }),
    );
    expect(one.kind).toBe("not_found");
    expect(one.message).toBe(`product ${x} does not exist`);
    const two = domainError(() =>
      priceItems(
        [
          { productId: x, quantity: 1 },
          { productId: mug.id, quantity: 1 },
          { productId: y, quantity: 1 },
        ],
        // Even when the catalog forgets to list an id as missing.
        { products: [mug], missingIds: [x] },
      ),
    );
    expect(two.message).toContain(x);
    expect(two.message).toContain(y);
    expect(two.message).not.toContain(mug.id);
  });

  it("is failed_precondition naming the sku and both prices when a price changed", () => {
    const mug = product({ price: { currencyCode: "EUR", amountMinor: 1290n } });
    const error = domainError(() =>
      priceItems(
        [
          {
            productId: mug.id,
            quantity: 1,
            expectedUnitPrice: { currencyCode: "EUR", amountMinor: 1200n },
          },
        ],
        { products: [mug], missingIds: [] },
      ),
    );
    expect(error.kind).toBe("failed_precondition");
    expect(error.message).toContain(mug.sku);
    expect(error.message).toContain("EUR 12.90");
    expect(error.message).toContain("EUR 12.00");
  });

  it("treats an expected price in another currency as changed", () => {
    const mug = product();
    const error = domainError(() =>
      priceItems(
        [
          {
            productId: mug.id,
            quantity: 1,
            expectedUnitPrice: { currencyCode: "USD", amountMinor: mug.price.amountMinor },
          },
        ],
        { products: [mug], missingIds: [] },
      ),
    );
    expect(error.kind).toBe("failed_precondition");
    expect(error.message).toContain("USD 12.90");
  });

  it("is invalid_argument when the items are priced in different currencies", () => {
    const eur = product();
    const usd = product({ price: { currencyCode: "USD", amountMinor: 500n } });
    const error = domainError(() =>
      priceItems(
        [
          { productId: eur.id, quantity: 1 },
          { productId: usd.id, quantity: 1 },
        ],
        { products: [eur, usd], missingIds: [] },
      ),
    );
    expect(error.kind).toBe("invalid_argument");
    expect(error.message).toMatch(/different currencies/);
    expect(error.message).toContain(usd.sku);
  });

  it("refuses a total above what one Money may hold", () => {
    const pricey = product({ price: { currencyCode: "EUR", amountMinor: maxAmountMinor } });
    const error = domainError(() =>
      priceItems([{ productId: pricey.id, quantity: 2 }], { products: [pricey], missingIds: [] }),
    );
    expect(error.kind).toBe("invalid_argument");
    expect(error.message).toMatch(/split it/);
  });
});

describe("checkPlaceOrderInput", () => {
  const valid: PlaceOrderInput = {
    idempotencyKey: "key-12345678",
    items: [{ productId: randomUUID().toUpperCase(), quantity: 1 }],
    paymentToken: "tok_test_visa",
  };

  it("normalises product ids to lower case", () => {
    const checked = checkPlaceOrderInput(valid);
    expect(checked.items[0]!.productId).toBe(valid.items[0]!.productId.toLowerCase());
  });

  it("refuses a product listed twice, naming the field and the first occurrence", () => {
    const id = randomUUID();
    const error = domainError(() =>
      checkPlaceOrderInput({
        ...valid,
        items: [
          { productId: id, quantity: 1 },
          { productId: randomUUID(), quantity: 1 },
          { productId: id.toUpperCase(), quantity: 2 },
        ],
      }),
    );
    expect(error.kind).toBe("invalid_argument");
    expect(error.message).toMatch(/^items\[2\]\.product_id: .*items\[0\]/);
  });

  it.each([
    ["quantity 0", { items: [{ productId: randomUUID(), quantity: 0 }] }, /items\[0\]\.quantity/],
    [
      "quantity 101",
      { items: [{ productId: randomUUID(), quantity: 101 }] },
      /items\[0\]\.quantity/,
    ],
    ["no items", { items: [] }, /^items must hold 1 to 50/],
    [
      "51 items",
      { items: Array.from({ length: 51 }, () => ({ productId: randomUUID(), quantity: 1 })) },
      /^items must hold 1 to 50/,
    ],
    ["a short idempotency key", { idempotencyKey: "short" }, /^idempotency_key/],
    ["no idempotency key", { idempotencyKey: "" }, /^idempotency_key/],
    ["a bad payment token", { paymentToken: "4111111111111111" }, /^payment_token/],
    [
      "a product id that is no UUID",
      { items: [{ productId: "mug", quantity: 1 }] },
      /product_id must be a UUID/,
    ],
    [
      "a bad expected currency",
      {
        items: [
          {
            productId: randomUUID(),
            quantity: 1,
            expectedUnitPrice: { currencyCode: "eur", amountMinor: 1n },
          },
        ],
      },
      /expected_unit_price\.currency_code/,
    ],
  ])("refuses %s", (_what, change, message) => {
    const error = domainError(() => checkPlaceOrderInput({ ...valid, ...change }));
    expect(error.kind).toBe("invalid_argument");
    expect(error.message).toMatch(message);
  });
});

describe("formatMoney", () => {
  it.each([
    [{ currencyCode: "EUR", amountMinor: 1290n }, "EUR 12.90"],
    [{ currencyCode: "EUR", amountMinor: 5n }, "EUR 0.05"],
    [{ currencyCode: "JPY", amountMinor: 1290n }, "JPY 1290"],
    [{ currencyCode: "KWD", amountMinor: 1290n }, "KWD 1.290"],
    [{ currencyCode: "EUR", amountMinor: 123456789012345678n }, "EUR 1234567890123456.78"],
  ])("formats %o as %s", (money, text) => {
    expect(formatMoney(money)).toBe(text);
  });
});
