// A forged PaymentRequested for 1 cent against a 38.00 order, end to end through the real
// payment service: payment charges what the request says and reports it; the order believes
// only a capture of its total. Payment's relay delivers its events to this order service.
import { randomUUID } from "node:crypto";
import {
  PaymentRequestedSchema,
  StockReservedSchema,
} from "@thinmesh/contracts/shop/events/v1/saga_pb.js";
import { type Order, OrderStatus } from "@thinmesh/contracts/shop/order/v1/order_pb.js";
import { arrayLiteral, rowsOf } from "@thinmesh/platform";
import {
  buildEventEnvelope,
  eventSinkClient,
  eventually,
  startTestService,
  type TestService,
} from "@thinmesh/platform/testing";
import { sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { schema as paymentSchema } from "../../payment/src/db/schema.js";
import { definePaymentService } from "../../payment/src/service.js";
import { type FakeProduct, newUser, sagaEvent, startTestOrder, type TestOrder } from "./support.js";

let t: TestOrder;
let payment: TestService<typeof paymentSchema>;
let paymentSink: ReturnType<typeof eventSinkClient>;
let alice: Awaited<ReturnType<typeof newUser>>;
let mug: FakeProduct;

beforeAll(async () => {
  t = await startTestOrder("order_forged_payment");
  payment = await startTestService(definePaymentService(), "order_forged_payment_pay", {
    ORDER_URL: t.service.url,
    OUTBOX_POLL_MS: "50",
    PAYMENT_CHARGE_POLL_MS: "50",
  });
  paymentSink = eventSinkClient(payment.service.url);
  alice = await newUser(t.issuer);
  mug = t.catalog.add({ price: { currencyCode: "EUR", amountMinor: 1900n } });
});
afterAll(async () => {
  await payment?.stop();
  await t?.stop();
});

/** A 38.00 order, its stock reserved: AWAITING_PAYMENT, its PaymentRequested published. */
async function awaitingPayment(): Promise<Order> {
  const { order } = await t.client.placeOrder(
    {
      idempotencyKey: `key-${randomUUID()}`,
      items: [{ productId: mug.id, quantity: 2 }],
      paymentToken: "tok_visa",
    },
    alice.auth,
  );
  await t.sink.deliverOne(sagaEvent(StockReservedSchema, { orderId: order!.id }));
  expect(await current(order!.id)).toMatchObject({
    status: OrderStatus.AWAITING_PAYMENT,
    total: { currencyCode: "EUR", amountMinor: 3800n },
  });
  return order!;
}

const current = async (orderId: string) =>
  (await t.client.getOrder({ id: orderId }, alice.auth)).order!;

/** The genuine PaymentRequested the order published (received by the stand-in for payment). */
const genuineRequest = (orderId: string) =>
  eventually(() => {
    const event = t.payment.received.find(
      (e) => e.subject === orderId && e.type === PaymentRequestedSchema.typeName,
    );
    expect(event).toBeDefined();
    return event!;
  });

const forgedRequest = (order: Order) =>
  buildEventEnvelope(
    PaymentRequestedSchema,
    {
      orderId: order.id,
      userId: alice.id,
      amount: { currencyCode: "EUR", amountMinor: 1n },
      paymentToken: "tok_attacker",
    },
    { source: "order", subject: order.id },
  );

/** How payment settled the order's charge. */
async function paymentOf(orderId: string) {
  return rowsOf<{ status: string; amount_minor: string }>(
    await payment.service.database.db.execute(
      sql`select status, amount_minor::text from payments where order_id = ${orderId}`,
    ),
  );
}

/** What order's inbox recorded of the events payment published about the order. */
async function orderInboxOfPaymentEvents(orderId: string) {
  const published = rowsOf<{ id: string }>(
    await payment.service.database.db.execute(
      sql`select id from outbox_events where subject = ${orderId}`,
    ),
  );
  if (published.length === 0) return [];
  return rowsOf<{ type: string; outcome: string; refusal: string | null }>(
    await t.service.database.db.execute(
      sql`select type, outcome, refusal from inbox where event_id = any(${arrayLiteral(published.map((p) => p.id))}::uuid[])`,
    ),
  );
}

describe("a forged PaymentRequested for 1 cent", () => {
  it("arriving first is charged 1 cent, but the order refuses that capture and is not confirmed", async () => {
    const order = await awaitingPayment();
    expect(await paymentSink.deliverOne(forgedRequest(order))).toEqual({ duplicate: false });
    // Payment charges what it was asked and tells the order; the order refuses the capture.
    await eventually(async () => {
      expect(await paymentOf(order.id)).toEqual([{ status: "CAPTURED", amount_minor: "1" }]);
      expect(await orderInboxOfPaymentEvents(order.id)).toEqual([
        {
          type: "shop.events.v1.PaymentCaptured",
          outcome: "refused",
          refusal: expect.stringMatching(/captured EUR 0.01, but the order total is EUR 38.00/),
        },
      ]);
    });
    expect((await current(order.id)).status).toBe(OrderStatus.AWAITING_PAYMENT);
    // The genuine request then finds the order's payment asked for another amount: refused,
    // not charged again. The order stays unpaid (the mesh issue ties the event to its producer).
    expect(await paymentSink.deliverOne(await genuineRequest(order.id))).toEqual({
      duplicate: false,
    });
    expect(await paymentOf(order.id)).toEqual([{ status: "CAPTURED", amount_minor: "1" }]);
    expect((await current(order.id)).status).toBe(OrderStatus.AWAITING_PAYMENT);
  });

  it("arriving after the genuine one is refused: the order is confirmed for 38.00, charged once", async () => {
    const order = await awaitingPayment();
    await paymentSink.deliverOne(await genuineRequest(order.id));
    await eventually(async () =>
      expect((await current(order.id)).status).toBe(OrderStatus.CONFIRMED),
    );
    expect(await orderInboxOfPaymentEvents(order.id)).toEqual([
      { type: "shop.events.v1.PaymentCaptured", outcome: "applied", refusal: null },
    ]);
    expect(await paymentSink.deliverOne(forgedRequest(order))).toEqual({ duplicate: false });
    expect(await paymentOf(order.id)).toEqual([{ status: "CAPTURED", amount_minor: "3800" }]);
    expect((await current(order.id)).timeline.map((e) => e.step)).toEqual([
      "order placed",
      "stock reserved",
      "payment captured",
    ]);
  });
});
