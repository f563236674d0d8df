// The catalog's part of the order saga, end to end: events delivered to its EventSinkService
// as the order service's relay would, checked against stock, reservations and the outbox in
// the catalog's database. A fake order service receives what the catalog's relay delivers.
import { randomUUID } from "node:crypto";
import type { DescMessage, MessageInitShape } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import type { Event } from "@thinmesh/contracts/shop/events/v1/events_pb.js";
import {
  OrderCancelledSchema,
  OrderConfirmedSchema,
  OrderPlacedSchema,
  StockRejectedSchema,
  StockReservedSchema,
} from "@thinmesh/contracts/shop/events/v1/saga_pb.js";
import { type AppDatabase, rowsOf } from "@thinmesh/platform";
import {
  buildEventEnvelope,
  eventSinkClient,
  eventually,
  type RecordingEventSink,
  readOutboxEvents,
  rpcError,
  startRecordingEventSink,
} from "@thinmesh/platform/testing";
import { sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { schema } from "../src/db/schema.js";
import { createProduct } from "../src/domain/products.js";
import { createProductStore, listReservations, reservationTotals } from "../src/store.js";
import { connectClient, newProduct, startTestCatalog, type TestCatalog } from "./support.js";

/** Stands in for the order service: an EventSinkService that keeps what it is sent. */
let order: RecordingEventSink;
let catalog: TestCatalog;
let db: AppDatabase<typeof schema>;
let sink: ReturnType<typeof eventSinkClient>;

beforeAll(async () => {
  order = await startRecordingEventSink();
  catalog = await startTestCatalog("catalog_saga", { ORDER_URL: order.url, OUTBOX_POLL_MS: "50" });
  db = catalog.service.database.db;
  sink = eventSinkClient(catalog.service.url);
});
afterAll(async () => {
  await catalog?.stop();
  await order?.close();
});

/** An event envelope as the order service's outbox would send it. */
const envelope = <Desc extends DescMessage>(
  schema: Desc,
  data: MessageInitShape<Desc>,
  subject: string,
): Event => buildEventEnvelope(schema, data, { source: "order", subject });

const placed = (orderId: string, lines: { productId: string; quantity: number }[]) =>
  envelope(OrderPlacedSchema, { orderId, userId: "user-1", lines }, orderId);
const confirmed = (orderId: string) => envelope(OrderConfirmedSchema, { orderId }, orderId);
const cancelled = (orderId: string, reason = "payment declined") =>
  envelope(OrderCancelledSchema, { orderId, reason }, orderId);

async function deliver(event: Event): Promise<boolean> {
  return (await sink.deliverOne(event)).duplicate;
}

async function product(stock: number) {
  return createProduct(createProductStore(db), newProduct({ initialStock: stock }));
}

async function stockOf(...ids: string[]): Promise<number[]> {
  const found = await createProductStore(db).findByIds(ids);
  return ids.map((id) => found.find((p) => p.id === id)!.stockAvailable);
}

/** The events the catalog committed for an order, decoded. */
async function published(orderId: string) {
  const events = await readOutboxEvents(db, { subject: orderId }, [
    StockReservedSchema,
    StockRejectedSchema,
  ]);
  return events.map(({ type, source, subject, data }) => ({ type, source, subject, data }));
}

async function inboxOf(eventId: string) {
  const [row] = rowsOf<{ outcome: string; refusal: string | null }>(
    await db.execute(sql`select outcome, refusal from inbox where event_id = ${eventId}`),
  );
  return row;
}

const reservationOf = async (orderId: string) => (await listReservations(db, [orderId]))[0];

async function totalsOf(productId: string) {
  const totals = await reservationTotals(db);
  return totals.find((t) => t.productId === productId);
}

describe("OrderPlaced", () => {
  it("reserves every line, takes the units, and publishes StockReserved to order", async () => {
    const [tote, mug] = [await product(5), await product(3)];
    const orderId = randomUUID();
    expect(
      await deliver(
        placed(orderId, [
          { productId: tote.id, quantity: 2 },
          { productId: mug.id, quantity: 3 },
        ]),
      ),
    ).toBe(false);

    expect(await stockOf(tote.id, mug.id)).toEqual([3, 0]);
    const reservation = await reservationOf(orderId);
    expect(reservation).toMatchObject({ orderId, status: "reserved" });
    expect(reservation?.lines).toEqual(
      expect.arrayContaining([
        { productId: tote.id, quantity: 2 },
        { productId: mug.id, quantity: 3 },
      ]),
    );
    expect(reservation?.lines).toHaveLength(2);
    expect(await published(orderId)).toEqual([
      {
        type: StockReservedSchema.typeName,
        source: "catalog",
        subject: orderId,
        data: expect.objectContaining({ orderId }),
      },
    ]);
    expect(await totalsOf(mug.id)).toMatchObject({ stockAvailable: 0, reserved: 3, committed: 0 });
    // The relay delivers it to the subscriber named in config/subscriptions.yaml.
    await eventually(async () => {
      const delivered = order.received.filter((e) => e.subject === orderId);
      expect(delivered.map((e) => e.type)).toEqual([StockReservedSchema.typeName]);
    });
  });

  it("reserves nothing when one line is short, and publishes StockRejected naming it", async () => {
    const tote = await product(5);
    const mug = await product(1);
    const orderId = randomUUID();
    await deliver(
      placed(orderId, [
        { productId: tote.id, quantity: 2 },
        { productId: mug.id, quantity: 3 },
      ]),
    );

    expect(await stockOf(tote.id, mug.id)).toEqual([5, 1]);
    // Released and empty: the order id can reserve nothing later.
    expect(await reservationOf(orderId)).toMatchObject({ status: "released", lines: [] });
    const [event, ...more] = await published(orderId);
    expect(more).toEqual([]);
    expect(event?.type).toBe(StockRejectedSchema.typeName);
    expect(event?.data).toMatchObject({
      orderId,
      reason: `not enough stock for ${mug.sku} (wanted 3, 1 available)`,
      productIds: [mug.id],
    });
    await eventually(async () => {
      const delivered = order.received.filter((e) => e.subject === orderId);
      expect(delivered.map((e) => e.type)).toEqual([StockRejectedSchema.typeName]);
    });
  });

  it("rejects an order for an unknown product, changing nothing else", async () => {
    const tote = await product(5);
    const unknown = randomUUID();
    const orderId = randomUUID();
    await deliver(
      placed(orderId, [
        { productId: tote.id, quantity: 1 },
        { productId: unknown, quantity: 1 },
        { productId: "not-a-product-id", quantity: 1 },
      ]),
    );

    expect(await stockOf(tote.id)).toEqual([5]);
    expect(await reservationOf(orderId)).toMatchObject({ status: "released", lines: [] });
    const events = await published(orderId);
    expect(events.map((e) => e.type)).toEqual([StockRejectedSchema.typeName]);
    expect(events[0]?.data).toMatchObject({
      reason: `unknown product ${unknown}; unknown product not-a-product-id`,
      productIds: [unknown, "not-a-product-id"],
    });
  });

  it("applies an event delivered twice (or at once) only once", async () => {
    const tote = await product(5);
    const orderId = randomUUID();
    const event = placed(orderId, [{ productId: tote.id, quantity: 2 }]);
    expect(await deliver(event)).toBe(false);
    expect(await deliver(event)).toBe(true);
    await Promise.all([deliver(event), deliver(event)]);

    expect(await stockOf(tote.id)).toEqual([3]);
    expect((await published(orderId)).map((e) => e.type)).toEqual([StockReservedSchema.typeName]);
  });

  it("changes nothing for a second OrderPlaced of an order that has a reservation", async () => {
    const tote = await product(5);
    const orderId = randomUUID();
    await deliver(placed(orderId, [{ productId: tote.id, quantity: 2 }]));
    // Another event id for the same order: the inbox does not know it, the reservation does.
    expect(await deliver(placed(orderId, [{ productId: tote.id, quantity: 2 }]))).toBe(false);
    await Promise.all([
      deliver(placed(orderId, [{ productId: tote.id, quantity: 1 }])),
      deliver(placed(orderId, [{ productId: tote.id, quantity: 1 }])),
    ]);

    expect(await stockOf(tote.id)).toEqual([3]);
    expect((await reservationOf(orderId))?.lines).toEqual([{ productId: tote.id, quantity: 2 }]);
    expect((await published(orderId)).map((e) => e.type)).toEqual([StockReservedSchema.typeName]);
  });

  it("refuses a second OrderPlaced with other lines, recording why in the inbox", async () => {
    const tote = await product(5);
    const orderId = randomUUID();
    await deliver(placed(orderId, [{ productId: tote.id, quantity: 2 }]));
    const same = placed(orderId, [{ productId: tote.id, quantity: 2 }]);
    const other = placed(orderId, [{ productId: tote.id, quantity: 3 }]);
    expect(await deliver(same)).toBe(false);
    expect(await deliver(other)).toBe(false);
    expect(await inboxOf(same.id)).toEqual({ outcome: "applied", refusal: null });
    expect(await inboxOf(other.id)).toEqual({
      outcome: "refused",
      refusal: expect.stringMatching(/already has a reservation \(reserved\) of other lines/),
    });
    expect(await stockOf(tote.id)).toEqual([3]);
    expect((await published(orderId)).map((e) => e.type)).toEqual([StockReservedSchema.typeName]);
  });

  it("reserves nothing for an OrderPlaced after the order's stock was rejected", async () => {
    const tote = await product(2);
    const orderId = randomUUID();
    await deliver(placed(orderId, [{ productId: tote.id, quantity: 3 }]));
    const forged = placed(orderId, [{ productId: tote.id, quantity: 2 }]);
    expect(await deliver(forged)).toBe(false);
    expect(await stockOf(tote.id)).toEqual([2]);
    expect(await reservationOf(orderId)).toMatchObject({ status: "released", lines: [] });
    expect((await published(orderId)).map((e) => e.type)).toEqual([StockRejectedSchema.typeName]);
  });

  it.each([
    ["no lines", []],
    ["a quantity of 0", [{ quantity: 0 }]],
    ["a quantity above 100", [{ quantity: 101 }]],
    ["more than 50 lines", Array.from({ length: 51 }, () => ({ quantity: 1 }))],
  ])("refuses an OrderPlaced with %s (outside the contract), taking nothing and answering nothing", async (_what, lines) => {
    const tote = await product(500);
    const orderId = randomUUID();
    const event = placed(
      orderId,
      lines.map((line) => ({ productId: tote.id, ...line })),
    );
    expect(await deliver(event)).toBe(false);
    expect(await inboxOf(event.id)).toMatchObject({ outcome: "refused" });
    expect(await stockOf(tote.id)).toEqual([500]);
    expect(await reservationOf(orderId)).toBeUndefined();
    expect(await published(orderId)).toEqual([]);
  });

  it("refuses an event without an order id, so the relay parks it instead of retrying", async () => {
    const error = await rpcError(sink.deliverOne(placed("", [])));
    expect(error.code).toBe(Code.InvalidArgument);
    expect(error.rawMessage).toMatch(/order_id/);
  });
});

describe("OrderConfirmed and OrderCancelled", () => {
  it("commit the reservation on confirmation: the units stay sold", async () => {
    const tote = await product(5);
    const orderId = randomUUID();
    await deliver(placed(orderId, [{ productId: tote.id, quantity: 2 }]));
    await deliver(confirmed(orderId));

    expect(await reservationOf(orderId)).toMatchObject({ status: "committed" });
    expect(await stockOf(tote.id)).toEqual([3]);
    expect(await totalsOf(tote.id)).toMatchObject({ stockAvailable: 3, reserved: 0, committed: 2 });
    // Settling publishes nothing.
    expect(await published(orderId)).toHaveLength(1);
  });

  it("release the reservation on cancellation: the units go back on sale", async () => {
    const tote = await product(5);
    const mug = await product(2);
    const orderId = randomUUID();
    await deliver(
      placed(orderId, [
        { productId: tote.id, quantity: 2 },
        { productId: mug.id, quantity: 2 },
      ]),
    );
    expect(await stockOf(tote.id, mug.id)).toEqual([3, 0]);
    await deliver(cancelled(orderId));

    expect(await reservationOf(orderId)).toMatchObject({ status: "released" });
    expect(await stockOf(tote.id, mug.id)).toEqual([5, 2]);
    expect(await totalsOf(mug.id)).toMatchObject({ stockAvailable: 2, reserved: 0, committed: 0 });
  });

  it("keep the stock sold when a cancellation follows the confirmation", async () => {
    const tote = await product(5);
    const orderId = randomUUID();
    await deliver(placed(orderId, [{ productId: tote.id, quantity: 2 }]));
    await deliver(confirmed(orderId));
    expect(await deliver(cancelled(orderId))).toBe(false);

    expect(await reservationOf(orderId)).toMatchObject({ status: "committed" });
    expect(await stockOf(tote.id)).toEqual([3]);
  });

  it("give the units back once however often the cancellation comes", async () => {
    const tote = await product(5);
    const orderId = randomUUID();
    await deliver(placed(orderId, [{ productId: tote.id, quantity: 2 }]));
    const cancellation = cancelled(orderId);
    await Promise.all([
      deliver(cancellation),
      deliver(cancellation),
      deliver(cancelled(orderId)),
      deliver(cancelled(orderId)),
    ]);
    await deliver(cancelled(orderId));

    expect(await stockOf(tote.id)).toEqual([5]);
    expect(await reservationOf(orderId)).toMatchObject({ status: "released" });
  });

  it("change nothing for a confirmation after a cancellation", async () => {
    const tote = await product(5);
    const orderId = randomUUID();
    await deliver(placed(orderId, [{ productId: tote.id, quantity: 2 }]));
    await deliver(cancelled(orderId));
    expect(await deliver(confirmed(orderId))).toBe(false);

    expect(await reservationOf(orderId)).toMatchObject({ status: "released" });
    expect(await stockOf(tote.id)).toEqual([5]);
  });

  it("change no stock for orders the catalog never reserved for", async () => {
    const tote = await product(5);
    const before = await reservationTotals(db);
    const unknown = randomUUID();
    expect(await deliver(confirmed(unknown))).toBe(false);
    expect(await deliver(cancelled(unknown))).toBe(false);
    expect(await deliver(confirmed(randomUUID()))).toBe(false);

    expect(await reservationTotals(db)).toEqual(before);
    expect(await stockOf(tote.id)).toEqual([5]);
    expect(await published(unknown)).toEqual([]);
  });

  it("reserve nothing for an OrderPlaced that arrives after the order's cancellation", async () => {
    const tote = await product(5);
    const orderId = randomUUID();
    await deliver(cancelled(orderId, "timed out waiting for stock"));
    await deliver(placed(orderId, [{ productId: tote.id, quantity: 2 }]));

    expect(await stockOf(tote.id)).toEqual([5]);
    expect(await reservationOf(orderId)).toEqual(
      expect.objectContaining({ status: "released", lines: [] }),
    );
    expect(await published(orderId)).toEqual([]);
  });

  it("leave the reservation alone for a confirmation that overtakes OrderPlaced", async () => {
    const tote = await product(5);
    const orderId = randomUUID();
    await deliver(confirmed(orderId));
    expect(await reservationOf(orderId)).toBeUndefined();
    await deliver(placed(orderId, [{ productId: tote.id, quantity: 2 }]));

    expect(await reservationOf(orderId)).toMatchObject({ status: "reserved" });
    expect(await stockOf(tote.id)).toEqual([3]);
  });
});

describe("concurrent orders", () => {
  it("sell the last units exactly once: 10 orders racing for 5", async () => {
    const tote = await product(5);
    const orders = Array.from({ length: 10 }, () => randomUUID());
    await Promise.all(
      orders.map((orderId) => deliver(placed(orderId, [{ productId: tote.id, quantity: 1 }]))),
    );

    expect(await stockOf(tote.id)).toEqual([0]);
    const outcomes = await Promise.all(orders.map(async (id) => (await published(id))[0]?.type));
    expect(outcomes.filter((t) => t === StockReservedSchema.typeName)).toHaveLength(5);
    expect(outcomes.filter((t) => t === StockRejectedSchema.typeName)).toHaveLength(5);
    const reservations = await listReservations(db, orders);
    // The rejected ones are released and empty.
    expect(reservations.filter((r) => r.status === "reserved")).toHaveLength(5);
    expect(
      reservations.filter((r) => r.status === "released" && r.lines.length === 0),
    ).toHaveLength(5);
    expect(await totalsOf(tote.id)).toMatchObject({ stockAvailable: 0, reserved: 5 });
  });

  it("do not deadlock when they lock the same products from opposite ends", async () => {
    const [a, b, c] = [await product(10), await product(10), await product(10)];
    const orders = Array.from({ length: 24 }, (_, i) => ({
      orderId: randomUUID(),
      lines: (i % 2 ? [a, b, c] : [c, b, a]).map((p) => ({ productId: p.id, quantity: 1 })),
    }));
    // Every delivery succeeds: a deadlock would fail one with an error.
    await Promise.all(orders.map(({ orderId, lines }) => deliver(placed(orderId, lines))));

    expect(await stockOf(a.id, b.id, c.id)).toEqual([0, 0, 0]);
    const reserved = await listReservations(
      db,
      orders.map((o) => o.orderId),
    );
    expect(reserved.filter((r) => r.status === "reserved")).toHaveLength(10);
  });

  it("never take stock below zero, whatever mix of orders and cancellations runs", async () => {
    const tote = await product(3);
    const orders = Array.from({ length: 12 }, () => randomUUID());
    await Promise.all(
      orders.map(async (orderId, i) => {
        await deliver(placed(orderId, [{ productId: tote.id, quantity: 1 + (i % 2) }]));
        if (i % 3 === 0) await deliver(cancelled(orderId));
      }),
    );

    const totals = await totalsOf(tote.id);
    expect(totals!.stockAvailable).toBeGreaterThanOrEqual(0);
    // What is held plus what is left is what there was: nothing leaked, nothing doubled.
    expect(totals!.stockAvailable + totals!.reserved + totals!.committed).toBe(3);
  });
});

describe("reading while the saga runs", () => {
  it("answers GetProduct and ListProducts while a reservation holds the product's lock", async (context) => {
    // PGlite has one connection: a transaction held open there blocks everything by design.
    if (catalog.testDatabase.kind === "pglite") context.skip();
    const tote = await product(5);
    const client = connectClient(catalog.service.url);
    await catalog.service.database.db.transaction(async (tx) => {
      await tx.execute(sql`select 1 from products where id = ${tote.id} for update`);
      const { product: read } = await client.getProduct({ id: tote.id });
      expect(read?.stockAvailable).toBe(5);
      expect((await client.listProducts({ pageSize: 100 })).products.length).toBeGreaterThan(0);
    });
  });
});
