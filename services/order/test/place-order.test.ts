// PlaceOrder over a real port: pricing by the (fake) catalog, the order and its OrderPlaced
// event in one transaction, idempotency per user, and bad requests that write nothing.
import { randomUUID } from "node:crypto";
import { Code } from "@connectrpc/connect";
import { OrderStatus } from "@thinmesh/contracts/shop/order/v1/order_pb.js";
import { rpcError } from "@thinmesh/platform/testing";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { orders } from "../src/db/schema.js";
import {
  bearer,
  type FakeProduct,
  newTrace,
  newUser,
  publishedFor,
  rowCounts,
  startTestOrder,
  type TestOrder,
} from "./support.js";

let t: TestOrder;
let alice: Awaited<ReturnType<typeof newUser>>;
let mug: FakeProduct;
let tote: FakeProduct;

beforeAll(async () => {
  t = await startTestOrder("order_place");
  alice = await newUser(t.issuer);
  mug = t.catalog.add({ name: "Enamel mug", price: { currencyCode: "EUR", amountMinor: 1290n } });
  tote = t.catalog.add({ name: "Tote", price: { currencyCode: "EUR", amountMinor: 2499n } });
});
afterAll(async () => {
  await t?.stop();
});
beforeEach(() => {
  t.catalog.delayMs = 0;
});

const key = () => `key-${randomUUID()}`;

function request(overrides: Record<string, unknown> = {}) {
  return {
    idempotencyKey: key(),
    items: [
      { productId: mug.id, quantity: 2 },
      { productId: tote.id, quantity: 1 },
    ],
    paymentToken: "tok_test_visa",
    ...overrides,
  };
}

describe("PlaceOrder", () => {
  it("answers at once with a PENDING order priced by the catalog", async () => {
    const trace = newTrace();
    const { order } = await t.client.placeOrder(request(), {
      headers: { ...alice.auth.headers, traceparent: trace.traceparent },
    });
    expect(order).toMatchObject({
      userId: alice.id,
      status: OrderStatus.PENDING,
      cancelReason: "",
      traceId: trace.traceId,
      total: { currencyCode: "EUR", amountMinor: 2n * 1290n + 2499n },
      items: [
        {
          productId: mug.id,
          sku: mug.sku,
          name: "Enamel mug",
          quantity: 2,
          unitPrice: { currencyCode: "EUR", amountMinor: 1290n },
          lineTotal: { currencyCode: "EUR", amountMinor: 2580n },
        },
        {
          productId: tote.id,
          sku: tote.sku,
          quantity: 1,
          lineTotal: { currencyCode: "EUR", amountMinor: 2499n },
        },
      ],
      timeline: [{ step: "order placed", status: OrderStatus.PENDING, traceId: trace.traceId }],
    });
    expect(order?.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(order?.createTime?.seconds).toBeGreaterThan(0n);

    const published = await publishedFor(t.service, order!.id);
    expect(published.map((e) => e.type)).toEqual(["shop.events.v1.OrderPlaced"]);
    expect(published[0]!.envelope).toMatchObject({ source: "order", subject: order!.id });
    expect(published[0]!.envelope.traceparent).toContain(trace.traceId);
    expect(published[0]!.data).toMatchObject({
      orderId: order!.id,
      userId: alice.id,
      lines: [
        { productId: mug.id, quantity: 2 },
        { productId: tote.id, quantity: 1 },
      ],
      total: { currencyCode: "EUR", amountMinor: 5079n },
    });
  });

  it("keeps the price it was placed at when the catalog's price changes later", async () => {
    const cup = t.catalog.add({ price: { currencyCode: "EUR", amountMinor: 700n } });
    const { order } = await t.client.placeOrder(
      request({ items: [{ productId: cup.id, quantity: 1 }] }),
      alice.auth,
    );
    cup.price = { currencyCode: "EUR", amountMinor: 900n };
    const { order: read } = await t.client.getOrder({ id: order!.id }, alice.auth);
    expect(read?.items[0]?.unitPrice?.amountMinor).toBe(700n);
    expect(read?.total?.amountMinor).toBe(700n);
  });

  it("accepts an expected unit price that matches the catalog", async () => {
    const { order } = await t.client.placeOrder(
      request({
        items: [{ productId: mug.id, quantity: 1, expectedUnitPrice: { ...mug.price } }],
      }),
      alice.auth,
    );
    expect(order?.total?.amountMinor).toBe(1290n);
  });
});

describe("PlaceOrder is idempotent per user and key", () => {
  it("returns the same order for the same key and request, as it is now", async () => {
    const body = request({
      items: [
        { productId: mug.id, quantity: 2, expectedUnitPrice: { ...mug.price } },
        { productId: tote.id, quantity: 1 },
      ],
    });
    const first = await t.client.placeOrder(body, alice.auth);
    const countsBefore = await rowCounts(t.service);
    // The saga moved on in between: the retry sees the order as it is now.
    await t.service.database.db
      .update(orders)
      .set({ status: "AWAITING_PAYMENT" })
      .where(eq(orders.id, first.order!.id));
    // And the mug's price changed, which a new request expecting the old price is refused
    // for: the retry still gets the order as placed.
    const product = t.catalog.products.get(mug.id)!;
    const price = product.price;
    product.price = { ...price, amountMinor: price.amountMinor + 100n };
    try {
      const again = await t.client.placeOrder(
        { ...body, items: [...body.items].reverse() },
        alice.auth,
      );
      expect(again.order?.id).toBe(first.order?.id);
      expect(again.order?.status).toBe(OrderStatus.AWAITING_PAYMENT);
      expect(again.order?.total).toEqual(first.order?.total);
      expect(await rowCounts(t.service)).toEqual(countsBefore);
    } finally {
      product.price = price;
    }
  });

  it("places one order for many concurrent requests with the same key", async () => {
    // The catalog answers slowly, so all six are priced before any of them inserts.
    t.catalog.delayMs = 100;
    const body = request();
    const countsBefore = await rowCounts(t.service);
    const callsBefore = t.catalog.calls;
    const answers = await Promise.all(
      Array.from({ length: 6 }, () => t.client.placeOrder(body, alice.auth)),
    );
    // All six were priced, so the unique constraint decided between them.
    expect(t.catalog.calls - callsBefore).toBe(6);
    const ids = new Set(answers.map((a) => a.order!.id));
    expect(ids.size).toBe(1);
    const [orderId] = [...ids];
    const countsAfter = await rowCounts(t.service);
    expect(countsAfter.orders - countsBefore.orders).toBe(1);
    expect(countsAfter.items - countsBefore.items).toBe(2);
    expect(countsAfter.events - countsBefore.events).toBe(1);
    expect((await publishedFor(t.service, orderId!)).map((e) => e.type)).toEqual([
      "shop.events.v1.OrderPlaced",
    ]);
  });

  it("is already_exists for the same key with a different request, and writes nothing", async () => {
    const body = request();
    const { order } = await t.client.placeOrder(body, alice.auth);
    const before = await rowCounts(t.service);
    for (const different of [
      { ...body, paymentToken: "tok_test_declined" },
      { ...body, items: [{ productId: mug.id, quantity: 3 }] },
    ]) {
      const error = await rpcError(t.client.placeOrder(different, alice.auth));
      expect(error.code).toBe(Code.AlreadyExists);
      expect(error.rawMessage).toContain(body.idempotencyKey);
      expect(error.rawMessage).toMatch(/already used for a different order; use a new key/);
    }
    expect(await rowCounts(t.service)).toEqual(before);
    expect((await t.client.getOrder({ id: order!.id }, alice.auth)).order?.items).toHaveLength(2);
  });

  it("lets concurrent requests with one key but different bodies place exactly one order", async () => {
    t.catalog.delayMs = 100;
    const body = request();
    const results = await Promise.allSettled([
      t.client.placeOrder(body, alice.auth),
      t.client.placeOrder({ ...body, paymentToken: "tok_other" }, alice.auth),
    ]);
    expect(results.map((r) => r.status).sort()).toEqual(["fulfilled", "rejected"]);
    const rejected = results.find((r) => r.status === "rejected") as PromiseRejectedResult;
    expect(rejected.reason.code).toBe(Code.AlreadyExists);
  });

  it("scopes keys per user: another user's same key places another order", async () => {
    const bob = await newUser(t.issuer);
    const body = request();
    const mine = await t.client.placeOrder(body, alice.auth);
    const theirs = await t.client.placeOrder(body, bob.auth);
    expect(theirs.order?.id).not.toBe(mine.order?.id);
    expect(theirs.order?.userId).toBe(bob.id);
  });
});

describe("PlaceOrder refuses bad requests and writes nothing", () => {
  const dupe = randomUUID();
  const cases: [string, () => Record<string, unknown>, Code, RegExp][] = [
    [
      "an unknown product",
      () => ({
        items: [
          { productId: mug.id, quantity: 1 },
          { productId: dupe, quantity: 1 },
        ],
      }),
      Code.NotFound,
      new RegExp(`product ${dupe} does not exist`),
    ],
    [
      "quantity 0",
      () => ({ items: [{ productId: mug.id, quantity: 0 }] }),
      Code.InvalidArgument,
      /items\[0\]\.quantity/,
    ],
    [
      "a negative quantity",
      () => ({ items: [{ productId: mug.id, quantity: -1 }] }),
      Code.InvalidArgument,
      /items\[0\]\.quantity/,
    ],
    [
      "quantity 101",
      () => ({ items: [{ productId: mug.id, quantity: 101 }] }),
      Code.InvalidArgument,
      /items\[0\]\.quantity/,
    ],
    ["no items", () => ({ items: [] }), Code.InvalidArgument, /items/],
    [
      "the same product twice",
      () => ({
        items: [
          { productId: mug.id, quantity: 1 },
          { productId: tote.id, quantity: 1 },
          { productId: mug.id, quantity: 2 },
        ],
      }),
      Code.InvalidArgument,
      /items\[2\]\.product_id.*items\[0\]/,
    ],
    [
      "a changed price",
      () => ({
        items: [
          {
            productId: mug.id,
            quantity: 1,
            expectedUnitPrice: { currencyCode: "EUR", amountMinor: 1190n },
          },
        ],
      }),
      Code.FailedPrecondition,
      /costs EUR 12\.90 now, not EUR 11\.90/,
    ],
    ["no idempotency key", () => ({ idempotencyKey: "" }), Code.InvalidArgument, /idempotency_key/],
    [
      "a bad payment token",
      () => ({ paymentToken: "4111 1111 1111 1111" }),
      Code.InvalidArgument,
      /payment_token/,
    ],
    [
      "a product id that is no UUID",
      () => ({ items: [{ productId: "mug", quantity: 1 }] }),
      Code.InvalidArgument,
      /items\[0\]\.product_id/,
    ],
  ];

  it.each(cases)("refuses %s", async (_what, change, code, message) => {
    const before = await rowCounts(t.service);
    const error = await rpcError(t.client.placeOrder(request(change()), alice.auth));
    expect(error.code).toBe(code);
    expect(error.rawMessage).toMatch(message);
    expect(await rowCounts(t.service)).toEqual(before);
  });

  it("names the sku when the price changed", async () => {
    const error = await rpcError(
      t.client.placeOrder(
        request({
          items: [
            {
              productId: tote.id,
              quantity: 1,
              expectedUnitPrice: { currencyCode: "EUR", amountMinor: 1n },
            },
          ],
        }),
        alice.auth,
      ),
    );
    expect(error.rawMessage).toContain(tote.sku);
  });

  it("refuses items priced in different currencies", async () => {
    const dollars = t.catalog.add({ price: { currencyCode: "USD", amountMinor: 500n } });
    const before = await rowCounts(t.service);
    const error = await rpcError(
      t.client.placeOrder(
        request({
          items: [
            { productId: mug.id, quantity: 1 },
            { productId: dollars.id, quantity: 1 },
          ],
        }),
        alice.auth,
      ),
    );
    expect(error.code).toBe(Code.InvalidArgument);
    expect(error.rawMessage).toMatch(/different currencies/);
    expect(await rowCounts(t.service)).toEqual(before);
  });

  it("needs a valid access token", async () => {
    const before = await rowCounts(t.service);
    expect((await rpcError(t.client.placeOrder(request()))).code).toBe(Code.Unauthenticated);
    const forged = await t.issuer.forgedTokens({ subject: alice.id });
    expect((await rpcError(t.client.placeOrder(request(), bearer(forged.expired!)))).code).toBe(
      Code.Unauthenticated,
    );
    expect(await rowCounts(t.service)).toEqual(before);
  });

  it("answers a retry with its order while the catalog cannot be reached", async () => {
    const offline = await startTestOrder("order_place_retry_offline");
    try {
      const user = await newUser(offline.issuer);
      const product = offline.catalog.add({
        name: "Enamel mug",
        price: { currencyCode: "EUR", amountMinor: 1290n },
      });
      const body = request({ items: [{ productId: product.id, quantity: 1 }] });
      const first = await offline.client.placeOrder(body, user.auth);
      await offline.catalog.close();
      const before = await rowCounts(offline.service);
      const again = await offline.client.placeOrder(body, user.auth);
      expect(again.order?.id).toBe(first.order?.id);
      // A different request with that key is still refused for the key, not for the catalog.
      const different = await rpcError(
        offline.client.placeOrder({ ...body, paymentToken: "tok_other" }, user.auth),
      );
      expect(different.code).toBe(Code.AlreadyExists);
      expect(await rowCounts(offline.service)).toEqual(before);
    } finally {
      await offline.stop();
    }
  });

  it("is unavailable while the catalog cannot be reached, and writes nothing", async () => {
    const offline = await startTestOrder("order_place_offline");
    try {
      await offline.catalog.close();
      const user = await newUser(offline.issuer);
      const before = await rowCounts(offline.service);
      const error = await rpcError(
        offline.client.placeOrder(
          request({ items: [{ productId: randomUUID(), quantity: 1 }] }),
          user.auth,
        ),
      );
      expect(error.code).toBe(Code.Unavailable);
      expect(error.rawMessage).toMatch(/catalog/);
      expect(await rowCounts(offline.service)).toEqual(before);
    } finally {
      await offline.stop();
    }
  });
});
