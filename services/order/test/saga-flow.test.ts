// The saga driven over a real port: events delivered to order's EventSinkService as catalog
// and payment would send them, the follow-up events observed in order's outbox and at the
// (fake) subscribers the relay delivers them to.
import { randomUUID } from "node:crypto";
import { Code } from "@connectrpc/connect";
import type { Event } from "@thinmesh/contracts/shop/events/v1/events_pb.js";
import {
  OrderPlacedSchema,
  PaymentCapturedSchema,
  PaymentDeclinedSchema,
  StockRejectedSchema,
  StockReservedSchema,
} from "@thinmesh/contracts/shop/events/v1/saga_pb.js";
import { type Order, OrderStatus } from "@thinmesh/contracts/shop/order/v1/order_pb.js";
import { arrayLiteral, rowsOf } from "@thinmesh/platform";
import { eventually, rpcError } from "@thinmesh/platform/testing";
import { sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type FakeProduct,
  newTrace,
  newUser,
  publishedFor,
  rowCounts,
  sagaEvent,
  startTestOrder,
  type TestOrder,
  unpack,
} from "./support.js";

let t: TestOrder;
let alice: Awaited<ReturnType<typeof newUser>>;
let mug: FakeProduct;

beforeAll(async () => {
  t = await startTestOrder("order_saga");
  alice = await newUser(t.issuer);
  mug = t.catalog.add({ price: { currencyCode: "EUR", amountMinor: 1290n } });
});
afterAll(async () => {
  await t?.stop();
});

async function place(quantity = 2, paymentToken = "tok_test_visa"): Promise<Order> {
  const { order } = await t.client.placeOrder(
    {
      idempotencyKey: `key-${randomUUID()}`,
      items: [{ productId: mug.id, quantity }],
      paymentToken,
    },
    alice.auth,
  );
  return order!;
}

async function deliver(event: Event, traceparent?: string) {
  return t.sink.deliverOne(event, traceparent ? { headers: { traceparent } } : {});
}

async function current(orderId: string): Promise<Order> {
  return (await t.client.getOrder({ id: orderId }, alice.auth)).order!;
}

const types = async (orderId: string) =>
  (await publishedFor(t.service, orderId)).map((e) => e.type.replace("shop.events.v1.", ""));

/** The events a fake subscriber received about one order, by type. */
const receivedFor = (received: Event[], orderId: string) =>
  received.filter((e) => e.subject === orderId).map((e) => e.type.replace("shop.events.v1.", ""));

describe("the saga", () => {
  it("runs from PENDING to CONFIRMED, one trace per step on the timeline", async () => {
    const order = await place(2, "tok_test_visa");
    const reserved = newTrace();
    const captured = newTrace();

    expect(
      await deliver(sagaEvent(StockReservedSchema, { orderId: order.id }), reserved.traceparent),
    ).toMatchObject({ duplicate: false });
    expect((await current(order.id)).status).toBe(OrderStatus.AWAITING_PAYMENT);
    const [, requested] = await publishedFor(t.service, order.id);
    expect(requested?.type).toBe("shop.events.v1.PaymentRequested");
    expect(requested?.data).toMatchObject({
      orderId: order.id,
      userId: alice.id,
      amount: { currencyCode: "EUR", amountMinor: 2580n },
      paymentToken: "tok_test_visa",
    });
    // The follow-up continues the trace of the step that caused it.
    expect(requested?.envelope.traceparent).toContain(reserved.traceId);

    await deliver(
      sagaEvent(PaymentCapturedSchema, {
        orderId: order.id,
        paymentId: "pay-1",
        amount: { currencyCode: "EUR", amountMinor: 2580n },
      }),
      captured.traceparent,
    );
    const confirmed = await current(order.id);
    expect(confirmed.status).toBe(OrderStatus.CONFIRMED);
    expect(confirmed.cancelReason).toBe("");
    expect(confirmed.traceId).toBe(order.traceId);
    expect(confirmed.timeline.map((e) => [e.step, OrderStatus[e.status]])).toEqual([
      ["order placed", "PENDING"],
      ["stock reserved", "AWAITING_PAYMENT"],
      ["payment captured", "CONFIRMED"],
    ]);
    expect(confirmed.timeline.map((e) => e.traceId)).toEqual([
      order.traceId,
      reserved.traceId,
      captured.traceId,
    ]);
    expect(confirmed.timeline[2]?.detail).toBe("payment pay-1 captured EUR 25.80");
    const times = confirmed.timeline.map((e) => Number(e.time!.seconds));
    expect(times).toEqual([...times].sort((a, b) => a - b));
    expect(await types(order.id)).toEqual(["OrderPlaced", "PaymentRequested", "OrderConfirmed"]);

    // The relay delivered each event to its subscriber (config/subscriptions.yaml).
    await eventually(() => {
      expect(receivedFor(t.catalog.received, order.id)).toEqual(["OrderPlaced", "OrderConfirmed"]);
      expect(receivedFor(t.payment.received, order.id)).toEqual(["PaymentRequested"]);
    });
  });

  it("cancels when the stock is rejected, with the reason, and asks for no payment", async () => {
    const order = await place();
    await deliver(
      sagaEvent(StockRejectedSchema, {
        orderId: order.id,
        reason: `only 1 of ${mug.sku} left`,
        productIds: [mug.id],
      }),
    );
    const cancelled = await current(order.id);
    expect(cancelled.status).toBe(OrderStatus.CANCELLED);
    expect(cancelled.cancelReason).toBe(`stock could not be reserved: only 1 of ${mug.sku} left`);
    expect(cancelled.timeline.at(-1)).toMatchObject({
      step: "stock rejected",
      status: OrderStatus.CANCELLED,
    });
    expect(cancelled.timeline.at(-1)?.detail).toContain(mug.id);
    expect(await types(order.id)).toEqual(["OrderPlaced"]);
  });

  it("cancels a declined payment and publishes OrderCancelled for the catalog to release", async () => {
    const order = await place(1, "tok_test_declined");
    await deliver(sagaEvent(StockReservedSchema, { orderId: order.id }));
    await deliver(
      sagaEvent(PaymentDeclinedSchema, {
        orderId: order.id,
        paymentId: "pay-2",
        reason: "card declined",
      }),
    );
    const cancelled = await current(order.id);
    expect(cancelled.status).toBe(OrderStatus.CANCELLED);
    expect(cancelled.cancelReason).toBe("payment declined: card declined");
    expect(cancelled.timeline.map((e) => e.step)).toEqual([
      "order placed",
      "stock reserved",
      "payment declined",
    ]);
    const published = await publishedFor(t.service, order.id);
    expect(published.map((e) => e.type)).toEqual([
      "shop.events.v1.OrderPlaced",
      "shop.events.v1.PaymentRequested",
      "shop.events.v1.OrderCancelled",
    ]);
    expect(published[2]?.data).toMatchObject({
      orderId: order.id,
      reason: "payment declined: card declined",
    });
    await eventually(() => {
      expect(receivedFor(t.catalog.received, order.id)).toEqual(["OrderPlaced", "OrderCancelled"]);
    });
    const [delivered] = t.catalog.received
      .filter((e) => e.subject === order.id && e.type.endsWith("OrderCancelled"))
      .map(unpack);
    expect(delivered?.data.reason).toBe("payment declined: card declined");
  });
});

describe("events that do not fit change nothing", () => {
  it("applies an event delivered twice (also at once) only once", async () => {
    const order = await place();
    const event = sagaEvent(StockReservedSchema, { orderId: order.id });
    expect(await deliver(event)).toMatchObject({ duplicate: false });
    expect(await deliver(event)).toMatchObject({ duplicate: true });
    await Promise.all([deliver(event), deliver(event), deliver(event)]);
    const after = await current(order.id);
    expect(after.status).toBe(OrderStatus.AWAITING_PAYMENT);
    expect(after.timeline).toHaveLength(2);
    expect(await types(order.id)).toEqual(["OrderPlaced", "PaymentRequested"]);
  });

  it("ignores the same news sent again as a new event (a different id)", async () => {
    const order = await place();
    await deliver(sagaEvent(StockReservedSchema, { orderId: order.id }));
    const again = await deliver(sagaEvent(StockReservedSchema, { orderId: order.id }));
    expect(again).toMatchObject({ duplicate: false });
    expect((await current(order.id)).timeline).toHaveLength(2);
    expect(await types(order.id)).toEqual(["OrderPlaced", "PaymentRequested"]);
  });

  it("ignores an event out of order, and the saga goes on when the right one comes", async () => {
    const order = await place();
    const early = sagaEvent(PaymentCapturedSchema, {
      orderId: order.id,
      paymentId: "pay-early",
      amount: order.total,
    });
    await deliver(early);
    expect(await current(order.id)).toMatchObject({ status: OrderStatus.PENDING });
    expect((await current(order.id)).timeline).toHaveLength(1);
    expect(await types(order.id)).toEqual(["OrderPlaced"]);

    await deliver(sagaEvent(StockReservedSchema, { orderId: order.id }));
    await deliver(
      sagaEvent(PaymentCapturedSchema, {
        orderId: order.id,
        paymentId: "pay-1",
        amount: order.total,
      }),
    );
    expect((await current(order.id)).status).toBe(OrderStatus.CONFIRMED);
  });

  it("ignores late news for a final order", async () => {
    const order = await place();
    await deliver(sagaEvent(StockRejectedSchema, { orderId: order.id, reason: "none left" }));
    const before = await current(order.id);
    await deliver(sagaEvent(StockReservedSchema, { orderId: order.id }));
    await deliver(
      sagaEvent(PaymentDeclinedSchema, { orderId: order.id, paymentId: "p", reason: "late" }),
    );
    expect(await current(order.id)).toEqual(before);
    expect(await types(order.id)).toEqual(["OrderPlaced"]);
  });

  it("ignores events for an unknown or malformed order id without failing the delivery", async () => {
    const before = await rowCounts(t.service);
    for (const orderId of [randomUUID(), "not-an-order-id"]) {
      expect(await deliver(sagaEvent(StockReservedSchema, { orderId }))).toMatchObject({
        duplicate: false,
      });
      await deliver(
        sagaEvent(PaymentCapturedSchema, {
          orderId,
          paymentId: "p",
          amount: { currencyCode: "EUR", amountMinor: 2580n },
        }),
      );
    }
    const after = await rowCounts(t.service);
    expect({ ...after, inbox: 0 }).toEqual({ ...before, inbox: 0 });
    expect(after.inbox - before.inbox).toBe(4);
  });

  it("refuses a forged capture of another amount or currency: the order stays AWAITING_PAYMENT, the inbox says why", async () => {
    const order = await place();
    await deliver(sagaEvent(StockReservedSchema, { orderId: order.id }));
    const before = await current(order.id);
    expect(before.status).toBe(OrderStatus.AWAITING_PAYMENT);
    const forgeries = [
      sagaEvent(PaymentCapturedSchema, {
        orderId: order.id,
        paymentId: "pay-forged",
        amount: { currencyCode: "EUR", amountMinor: 1n },
      }),
      sagaEvent(PaymentCapturedSchema, {
        orderId: order.id,
        paymentId: "pay-forged",
        amount: { currencyCode: "USD", amountMinor: order.total!.amountMinor },
      }),
      sagaEvent(PaymentCapturedSchema, { orderId: order.id, paymentId: "pay-forged" }),
      // About this order by its subject, about another by its data.
      {
        ...sagaEvent(PaymentCapturedSchema, {
          orderId: randomUUID(),
          paymentId: "p",
          amount: order.total,
        }),
        subject: order.id,
      },
    ];
    for (const forged of forgeries) {
      expect(await deliver(forged)).toEqual({ duplicate: false });
      // Redelivered, it is a duplicate.
      expect(await deliver(forged)).toEqual({ duplicate: true });
    }
    expect(await current(order.id)).toEqual(before);
    expect(await types(order.id)).toEqual(["OrderPlaced", "PaymentRequested"]);
    const recorded = rowsOf<{ outcome: string; refusal: string }>(
      await t.service.database.db.execute(
        sql`select outcome, refusal from inbox where event_id = any(${arrayLiteral(forgeries.map((f) => f.id))}::uuid[])`,
      ),
    );
    expect(recorded.map((r) => r.outcome)).toEqual(["refused", "refused", "refused", "refused"]);
    expect(recorded.map((r) => r.refusal)).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/captured EUR 0.01, but the order total is EUR/),
        expect.stringMatching(/captured USD .*, but the order total is EUR/),
        expect.stringMatching(/must say how much was captured/),
        expect.stringMatching(/is about order .* but its data names/),
      ]),
    );

    // The genuine capture still confirms it.
    await deliver(
      sagaEvent(PaymentCapturedSchema, {
        orderId: order.id,
        paymentId: "pay-1",
        amount: order.total,
      }),
    );
    expect((await current(order.id)).status).toBe(OrderStatus.CONFIRMED);
  });

  it("lets exactly one of two racing events move an order", async () => {
    for (let round = 0; round < 5; round++) {
      const order = await place();
      await Promise.all([
        deliver(sagaEvent(StockReservedSchema, { orderId: order.id })),
        deliver(sagaEvent(StockRejectedSchema, { orderId: order.id, reason: "race" })),
      ]);
      const after = await current(order.id);
      expect(after.timeline).toHaveLength(2);
      if (after.status === OrderStatus.AWAITING_PAYMENT) {
        expect(await types(order.id)).toEqual(["OrderPlaced", "PaymentRequested"]);
      } else {
        expect(after.status).toBe(OrderStatus.CANCELLED);
        expect(await types(order.id)).toEqual(["OrderPlaced"]);
      }
    }
  });

  it("refuses an event type it does not consume, so the relay parks it", async () => {
    const error = await rpcError(deliver(sagaEvent(OrderPlacedSchema, { orderId: randomUUID() })));
    expect(error.code).toBe(Code.InvalidArgument);
    expect(error.rawMessage).toMatch(/does not consume shop.events.v1.OrderPlaced/);
  });
});
