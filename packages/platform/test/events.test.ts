import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { Writable } from "node:stream";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import {
  DeliverRequestSchema,
  type Event,
  EventSchema,
} from "@thinmesh/contracts/shop/events/v1/events_pb.js";
import { OrderPlacedSchema } from "@thinmesh/contracts/shop/events/v1/saga_pb.js";
import { eq, inArray, type SQL, sql } from "drizzle-orm";
import { PgDialect } from "drizzle-orm/pg-core";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { freePort, spawnNode } from "../../../test/system/processes.js";
import {
  contextFromHeaders,
  createEventBus,
  createEventSink,
  createLogger,
  createMetrics,
  createRelay,
  currentContext,
  type Database,
  type EventBus,
  inbox,
  isUniqueViolation,
  listDeadDeliveries,
  type Metrics,
  on,
  openDatabase,
  outboxDeliveries,
  pruneEvents,
  type RunningService,
  redriveDeadDeliveries,
  refuse,
  rowsOf,
  runWithContext,
  startService,
  unavailable,
} from "../src/index.js";
import {
  buildEventEnvelope,
  createTestDatabase,
  eventSinkClient,
  eventually,
  readOutboxEvents,
  rpcError,
  startRecordingEventSink,
  type TestDatabase,
  testEnv,
} from "../src/testing/index.js";
import { consumerService, migrationsFolder } from "./fixtures/consumer-service.js";
import { effects } from "./fixtures/schema.js";

const logger = createLogger({
  service: "producer",
  version: "test",
  level: process.env.TEST_LOG_LEVEL ?? "silent",
});
const subscriptions = new Map([[OrderPlacedSchema.typeName, ["consumer", "slowpoke"]]]);

let producerDb: TestDatabase;
let producer: Database<Record<string, unknown>>;
let consumerDb: TestDatabase;
let consumer: RunningService;
const cleanups: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  producerDb = await createTestDatabase("platform_producer");
  producer = await openDatabase({ url: producerDb.url, schema: {}, migrationsFolder });
  await producer.migrate();
  consumerDb = await createTestDatabase("platform_consumer");
  consumer = await startService(consumerService, testEnv(consumerDb, { FAIL_QUANTITY: "13" }));
  await consumer.ready;
});
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  await producer.db.execute(sql`truncate outbox_events cascade`);
});
afterAll(async () => {
  await consumer?.stop();
  await producer?.close();
  await producerDb?.drop();
  await consumerDb?.drop();
});

/** A producer bus and relay delivering OrderPlaced to "consumer" (and "slowpoke"). */
function producerBus(
  urls: Record<string, string>,
  relayOptions: Partial<Parameters<typeof createRelay>[0]> = {},
) {
  const bus = createEventBus({
    source: "producer",
    db: producer.db,
    subscriptions,
    produces: [OrderPlacedSchema],
  });
  const relay = createRelay({
    db: producer.db,
    bus,
    subscriberUrls: { slowpoke: urls.consumer!, ...urls },
    logger,
    pollIntervalMs: 50,
    baseBackoffMs: 20,
    maxBackoffMs: 100,
    ...relayOptions,
  });
  cleanups.push(() => relay.stop());
  return { bus, relay };
}

async function placeOrder(bus: EventBus, orderId: string, quantity = 1) {
  return bus.transaction(async (_tx, publish) =>
    publish(
      OrderPlacedSchema,
      create(OrderPlacedSchema, { orderId, lines: [{ productId: "p", quantity }] }),
      orderId,
    ),
  );
}

const consumerEffects = async (orderId: string) =>
  (await (await openConsumer()).db.select().from(effects).where(eq(effects.orderId, orderId))) as {
    quantity: number;
  }[];
let consumerHandle: Database<Record<string, unknown>> | undefined;
async function openConsumer() {
  if (!consumerHandle) {
    // Read the consumer's database directly (PGlite lives inside the consumer service).
    consumerHandle = consumerDb.url
      ? await openDatabase({ url: consumerDb.url, schema: {}, migrationsFolder })
      : consumer.database;
    if (consumerDb.url) cleanupsAll.push(() => consumerHandle!.close());
  }
  return consumerHandle!;
}
const cleanupsAll: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const c of cleanupsAll) await c();
});

const deliveryStates = async (eventId: string) =>
  producer.db
    .select({
      subscriber: outboxDeliveries.subscriber,
      status: outboxDeliveries.status,
      attempts: outboxDeliveries.attempts,
    })
    .from(outboxDeliveries)
    .where(eq(outboxDeliveries.eventId, eventId))
    .orderBy(outboxDeliveries.subscriber);

describe("outbox", () => {
  it("commits an event with the transaction and delivers it once to every subscriber", async () => {
    const { bus, relay } = producerBus({ consumer: consumer.url });
    relay.start();
    const orderId = crypto.randomUUID();
    const eventId = await placeOrder(bus, orderId, 3);
    await eventually(async () => {
      expect(await deliveryStates(eventId)).toMatchObject([
        { subscriber: "consumer", status: "delivered" },
        { subscriber: "slowpoke", status: "delivered" },
      ]);
    });
    // Both subscribers are the same consumer here: the inbox applied the event once.
    expect(await consumerEffects(orderId)).toEqual([expect.objectContaining({ quantity: 3 })]);
  });

  it("writes nothing when the transaction rolls back", async () => {
    const { bus } = producerBus({ consumer: consumer.url });
    await expect(
      bus.transaction(async (_tx, publish) => {
        await publish(
          OrderPlacedSchema,
          create(OrderPlacedSchema, { orderId: "rolled-back" }),
          "rolled-back",
        );
        throw new Error("business rule failed");
      }),
    ).rejects.toThrow("business rule failed");
    const rows = await readOutboxEvents(producer.db, { subject: "rolled-back" });
    expect(rows).toEqual([]);
  });

  it("commits one statement's writes and its events as one, in one statement", async () => {
    const { bus, relay } = producerBus({ consumer: consumer.url });
    relay.start();
    const orderId = crypto.randomUUID();
    const publication = {
      schema: OrderPlacedSchema,
      data: create(OrderPlacedSchema, { orderId, lines: [{ productId: "p", quantity: 4 }] }),
      subject: orderId,
    };
    const written = (eventId: string) => sql`
      insert into ${effects} (event_id, order_id, quantity) values (${eventId}, ${orderId}, 4)`;
    const firstId = crypto.randomUUID();
    const result = await bus.executePublishing(
      [publication],
      (outbox) =>
        sql`with ${outbox}, effect as (${written(firstId)} returning event_id)
          select event_id from effect`,
    );
    expect(rowsOf<{ event_id: string }>(result)).toEqual([{ event_id: firstId }]);
    const [event] = await readOutboxEvents(producer.db, { subject: orderId });
    // Published like any event, the relay woken at once.
    await eventually(async () => {
      expect(await deliveryStates(event!.envelope.id)).toMatchObject([
        { subscriber: "consumer", status: "delivered" },
        { subscriber: "slowpoke", status: "delivered" },
      ]);
    });
    // A statement that fails writes no event either.
    await expect(
      bus.executePublishing(
        [publication],
        (outbox) => sql`with ${outbox}, effect as (${written(firstId)}) select 1`,
      ),
    ).rejects.toSatisfy((error) => isUniqueViolation(error));
    expect(await readOutboxEvents(producer.db, { subject: orderId })).toHaveLength(1);
  });

  it("refuses to publish an event type the service does not declare", async () => {
    const bus = createEventBus({
      source: "producer",
      db: producer.db,
      subscriptions,
      produces: [],
    });
    await expect(
      bus.transaction((_tx, publish) =>
        publish(OrderPlacedSchema, create(OrderPlacedSchema, {}), "x"),
      ),
    ).rejects.toThrow(/does not declare/);
  });

  it("carries the producing request's trace context in the envelope", async () => {
    const { bus } = producerBus({ consumer: consumer.url });
    const traceparent = "00-11112222333344445555666677778888-1111222233334444-01";
    const eventId = await runWithContext(contextFromHeaders(new Headers({ traceparent })), () =>
      placeOrder(bus, crypto.randomUUID()),
    );
    const [committed] = await readOutboxEvents(producer.db, { id: eventId });
    expect(committed!.envelope.traceparent).toBe(traceparent);
  });
});

describe("consumers", () => {
  it("apply an event delivered twice only once", async () => {
    const client = eventSinkClient(consumer.url);
    const { bus } = producerBus({ consumer: consumer.url });
    const orderId = crypto.randomUUID();
    const eventId = await placeOrder(bus, orderId, 2);
    const [committed] = await readOutboxEvents(producer.db, { id: eventId });
    const event = committed!.envelope;
    expect(await client.deliverOne(event)).toMatchObject({ duplicate: false });
    expect(await client.deliverOne(event)).toMatchObject({ duplicate: true });
    await Promise.all([client.deliverOne(event), client.deliverOne(event)]);
    expect(await consumerEffects(orderId)).toHaveLength(1);
  });

  it("receive what they missed while down once they are back", async () => {
    const port = await freePort();
    const { bus, relay } = producerBus({ consumer: `http://127.0.0.1:${port}` });
    relay.start();
    const orderId = crypto.randomUUID();
    const eventId = await placeOrder(bus, orderId);
    await eventually(async () => {
      const states = await deliveryStates(eventId);
      expect(states.find((s) => s.subscriber === "consumer")!.attempts).toBeGreaterThanOrEqual(3);
    });
    const db = await createTestDatabase("platform_late");
    const late = await startService(consumerService, testEnv(db, { PORT: String(port) }));
    cleanups.push(async () => {
      await late.stop();
      await db.drop();
    });
    await late.ready;
    await eventually(async () => {
      expect((await deliveryStates(eventId)).map((s) => s.status)).toEqual([
        "delivered",
        "delivered",
      ]);
    });
  });

  /**
   * A subscriber not listening yet: the relay's deliveries of `count` new events to it (and to
   * the other subscriber, on the same absent port) fail and are recorded. bringUp() starts it.
   */
  async function subscriberAway(count: number, relayOptions: Parameters<typeof producerBus>[1]) {
    const port = await freePort();
    const { bus, relay } = producerBus({ consumer: `http://127.0.0.1:${port}` }, relayOptions);
    relay.start();
    const missed: string[] = [];
    for (let i = 0; i < count; i++) missed.push(await placeOrder(bus, crypto.randomUUID()));
    await eventually(async () => {
      // Both subscribers' calls failed (connection refused) and were recorded.
      const failed = rowsOf(
        await producer.db.execute(
          sql`select 1 from outbox_deliveries where event_id = any(${`{${missed.join(",")}}`}::uuid[]) and status = 'pending' and last_error is not null`,
        ),
      );
      expect(failed).toHaveLength(2 * count);
    });
    return {
      bus,
      missed,
      async bringUp() {
        const db = await createTestDatabase("platform_back");
        const back = await startService(consumerService, testEnv(db, { PORT: String(port) }));
        cleanups.push(async () => {
          await back.stop();
          await db.drop();
        });
        await back.ready;
      },
    };
  }

  const allDelivered = (ids: string[]) =>
    eventually(async () => {
      for (const id of ids) {
        expect((await deliveryStates(id)).map((s) => s.status)).toEqual(["delivered", "delivered"]);
      }
    }, 20_000);

  it("get what failed while they were away as soon as they answer again, not after grown backoffs", async () => {
    // Backoffs as they grow while a subscriber stays away: the next attempt 30 to 60 s off.
    const away = await subscriberAway(1, { baseBackoffMs: 60_000, maxBackoffMs: 60_000 });
    await away.bringUp();
    // A new event gets through, and shows the consumer is back.
    await placeOrder(away.bus, crypto.randomUUID());
    const backAt = Date.now();
    await allDelivered(away.missed);
    expect(Date.now() - backAt).toBeLessThan(5_000);
  });

  it("find out a subscriber is back without a new event: one delivery is probed each poll", async () => {
    const away = await subscriberAway(2, {
      pollIntervalMs: 200,
      baseBackoffMs: 60_000,
      maxBackoffMs: 60_000,
    });
    await away.bringUp();
    const backAt = Date.now();
    await allDelivered(away.missed);
    // Without the probe: a minute of backoff.
    expect(Date.now() - backAt).toBeLessThan(5_000);
  });

  it("dedupe a redelivery after the relay died between delivering and marking delivered", async () => {
    const { bus, relay } = producerBus({ consumer: consumer.url }, { leaseMs: 200 });
    const orderId = crypto.randomUUID();
    const eventId = await placeOrder(bus, orderId, 5);
    // The dying relay: it claimed the rows and delivered, but never recorded it.
    await producer.db.execute(
      sql`update outbox_deliveries set lease_until = now() + interval '200 milliseconds', attempts = 1 where event_id = ${eventId}`,
    );
    const [committed] = await readOutboxEvents(producer.db, { id: eventId });
    await eventSinkClient(consumer.url).deliverOne(committed!.envelope);
    // A surviving relay takes over once the lease lapses.
    relay.start();
    await eventually(async () => {
      expect((await deliveryStates(eventId)).map((s) => s.status)).toEqual([
        "delivered",
        "delivered",
      ]);
    });
    expect(await consumerEffects(orderId)).toHaveLength(1);
  });
});

describe("a delivery of several events", () => {
  async function committedEvent(bus: EventBus, orderId: string, quantity: number) {
    const eventId = await placeOrder(bus, orderId, quantity);
    return (await readOutboxEvents(producer.db, { id: eventId }))[0]!.envelope;
  }

  it("applies them in one go and answers for each: applied, duplicate, or why not", async () => {
    const { bus } = producerBus({ consumer: consumer.url });
    const [first, second, failing] = [
      crypto.randomUUID(),
      crypto.randomUUID(),
      crypto.randomUUID(),
    ];
    const seen = await committedEvent(bus, first, 1);
    await eventSinkClient(consumer.url).deliverOne(seen);
    const fresh = await committedEvent(bus, second, 2);
    const unlucky = await committedEvent(bus, failing, 13);
    const alien = { ...fresh, id: crypto.randomUUID(), type: "shop.events.v1.StockReserved" };

    const again = { ...fresh, id: fresh.id.toUpperCase() };
    const { results } = await eventSinkClient(consumer.url).deliver({
      events: [seen, fresh, again, unlucky, alien],
    });
    expect(results).toMatchObject([
      { eventId: seen.id, duplicate: true },
      { eventId: fresh.id, duplicate: false },
      // The same event twice in one call (a UUID in capitals is the same UUID).
      { eventId: again.id, duplicate: true },
      {
        eventId: unlucky.id,
        error: { code: "unavailable", message: expect.stringMatching(/13 units/) },
      },
      { eventId: alien.id, error: { code: "invalid_argument" } },
    ]);
    expect(results[1]?.error).toBeUndefined();
    // The failing event took nothing down with it; it left no effect of its own.
    expect(await consumerEffects(second)).toEqual([expect.objectContaining({ quantity: 2 })]);
    expect(await consumerEffects(failing)).toEqual([]);
  });

  /** An event sink in this process over the producer's database, called directly. */
  function inProcessSink(
    handle: Parameters<typeof on<typeof OrderPlacedSchema>>[1],
    metrics?: Metrics,
    sinkLogger = logger,
    producers?: ReadonlyMap<string, string>,
  ) {
    const bus = createEventBus({
      source: "consumer",
      db: producer.db,
      subscriptions: new Map(),
      produces: [],
    });
    const sink = createEventSink(bus, [on(OrderPlacedSchema, handle)], {
      logger: sinkLogger,
      metrics,
      producers,
    });
    return async (events: Event[], requestHeader = new Headers()) =>
      sink.deliver(create(DeliverRequestSchema, { events }), { requestHeader } as never);
  }
  const placedAbout = (subject: string, orderId: string) =>
    buildEventEnvelope(OrderPlacedSchema, { orderId }, { source: "producer", subject });

  it("accepts an event type only from its producer's mesh identity, when the sidecar names it", async () => {
    const applied: string[] = [];
    const deliver = inProcessSink(
      async (placed) => {
        applied.push(placed.orderId);
      },
      undefined,
      logger,
      new Map([[OrderPlacedSchema.typeName, "order"]]),
    );
    // What the consumer's inbound sidecar appends after verifying the caller's certificate.
    const from = (sa: string) =>
      new Headers({
        "x-forwarded-client-cert": `By=spiffe://cluster.local/ns/shop/sa/catalog;URI=spiffe://cluster.local/ns/shop/sa/${sa}`,
      });
    const forged = placedAbout("f", "forged");
    const { results } = await deliver([forged], from("payment"));
    expect(results).toMatchObject([
      {
        eventId: forged.id,
        error: {
          code: "permission_denied",
          message:
            "shop.events.v1.OrderPlaced events are accepted only from cluster.local/ns/shop/sa/order, not from cluster.local/ns/shop/sa/payment",
        },
      },
    ]);
    // Another namespace's "order" is not the producer either.
    const elsewhere = new Headers({
      "x-forwarded-client-cert":
        "By=spiffe://cluster.local/ns/shop/sa/catalog;URI=spiffe://cluster.local/ns/dev/sa/order",
    });
    expect((await deliver([placedAbout("e", "elsewhere")], elsewhere)).results).toMatchObject([
      { error: { code: "permission_denied" } },
    ]);
    const genuine = placedAbout("g", "genuine");
    const accepted = await deliver([genuine], from("order"));
    expect(accepted.results?.map((r) => [r.eventId, r.error])).toEqual([[genuine.id, undefined]]);
    // Without a sidecar's header (a test, or the benchmark's bypass) there is no identity to
    // check: the AuthorizationPolicies and the private sockets are the guard then.
    const unchecked = placedAbout("u", "unchecked");
    expect((await deliver([unchecked])).results?.map((r) => r.error)).toEqual([undefined]);
    expect(applied).toEqual(["genuine", "unchecked"]);
  });

  it("applies events about one subject in order, those about others alongside", async () => {
    const steps: string[] = [];
    const deliver = inProcessSink(async (placed) => {
      steps.push(`start ${placed.orderId}`);
      await new Promise((resolve) => setTimeout(resolve, 30));
      steps.push(`end ${placed.orderId}`);
    });
    const response = await deliver([
      placedAbout("a", "a1"),
      placedAbout("a", "a2"),
      placedAbout("b", "b1"),
    ]);
    expect(response.results?.map((r) => r.error)).toEqual([undefined, undefined, undefined]);
    expect(steps).toEqual(["start a1", "start b1", "end a1", "start a2", "end b1", "end a2"]);
  });

  it("runs each event's handler in the trace of the step that published it", async () => {
    const traceOf = new Map<string, string | undefined>();
    const deliver = inProcessSink(async (placed) => {
      traceOf.set(placed.orderId, currentContext()?.traceId);
    });
    const traced = (orderId: string, traceId: string) =>
      buildEventEnvelope(
        OrderPlacedSchema,
        { orderId },
        { source: "producer", subject: orderId, traceparent: `00-${traceId}-1111222233334444-01` },
      );
    const [first, second] = ["1".repeat(32), "2".repeat(32)];
    await deliver([traced("one", first), traced("two", second), placedAbout("three", "three")]);
    expect(traceOf.get("one")).toBe(first);
    expect(traceOf.get("two")).toBe(second);
    // Published outside any trace: a trace of its own.
    expect(traceOf.get("three")).toMatch(/^[\da-f]{32}$/);
    expect([first, second]).not.toContain(traceOf.get("three"));
  });

  it("undoes what the handlers did when some events were seen before, then applies the rest once", async () => {
    const handled: string[] = [];
    const deliver = inProcessSink(async (placed, { tx, event }) => {
      handled.push(placed.orderId);
      await tx.insert(effects).values({ eventId: event.id, orderId: placed.orderId, quantity: 1 });
    });
    const [seenOrder, newOrder] = [crypto.randomUUID(), crypto.randomUUID()];
    const seen = placedAbout("s", seenOrder);
    await deliver([seen]);
    const fresh = placedAbout("n", newOrder);
    const response = await deliver([seen, fresh]);
    expect(response.results).toMatchObject([
      { eventId: seen.id, duplicate: true },
      { eventId: fresh.id, duplicate: false },
    ]);
    // The handlers ran before the inbox answered (the seen event's handler failed on its own
    // earlier effect); that attempt was rolled back and the new event applied again alone.
    expect(handled).toEqual([seenOrder, seenOrder, newOrder, newOrder]);
    for (const orderId of [seenOrder, newOrder]) {
      const rows = await producer.db.select().from(effects).where(eq(effects.orderId, orderId));
      expect(rows).toHaveLength(1);
    }
  });

  it("lets every handler of a failed batch finish before the events are retried alone", async () => {
    const deliver = inProcessSink(async (placed, { tx, event }) => {
      if (placed.orderId === "fails") throw unavailable("not now");
      // Still working, on the transaction, when the other handler has already failed.
      await new Promise((resolve) => setTimeout(resolve, 50));
      await tx.insert(effects).values({ eventId: event.id, orderId: placed.orderId, quantity: 1 });
    });
    const orderId = crypto.randomUUID();
    const slow = placedAbout("s", orderId);
    const failing = placedAbout("f", "fails");
    const response = await deliver([slow, failing]);
    expect(response.results).toMatchObject([
      { eventId: slow.id, duplicate: false },
      { eventId: failing.id, error: { code: "unavailable" } },
    ]);
    await new Promise((resolve) => setTimeout(resolve, 100));
    const rows = await producer.db.select().from(effects).where(eq(effects.orderId, orderId));
    expect(rows).toHaveLength(1);
  });

  it("counts the events received by type and outcome", async () => {
    const metrics = createMetrics("consumer");
    const deliver = inProcessSink(async (placed) => {
      if (placed.orderId === "fails") throw unavailable("not now");
    }, metrics);
    const applied = placedAbout("m", crypto.randomUUID());
    const alien = { ...placedAbout("m", "x"), type: "shop.events.v1.StockReserved" };
    await deliver([applied, { ...applied }, placedAbout("n", "fails"), alien]);
    const counts = (await metrics.inboxEvents.get()).values.map(({ labels, value }) => [
      labels.type,
      labels.outcome,
      value,
    ]);
    expect(counts).toEqual(
      expect.arrayContaining([
        [OrderPlacedSchema.typeName, "applied", 1],
        [OrderPlacedSchema.typeName, "duplicate", 1],
        [OrderPlacedSchema.typeName, "refused", 1],
        ["shop.events.v1.StockReserved", "refused", 1],
      ]),
    );
    expect(counts).toHaveLength(4);
  });

  it("records an event its handler refuses as refused, changes nothing for it, and logs and counts it", async () => {
    const metrics = createMetrics("consumer");
    const lines: Record<string, unknown>[] = [];
    const destination = new Writable({
      write(chunk, _encoding, done) {
        lines.push(JSON.parse(chunk.toString()));
        done();
      },
    });
    const deliver = inProcessSink(
      async (placed, { tx, event }) => {
        if (placed.orderId.startsWith("forged")) {
          return refuse("the order says otherwise", { orderId: placed.orderId });
        }
        await tx
          .insert(effects)
          .values({ eventId: event.id, orderId: placed.orderId, quantity: 1 });
      },
      metrics,
      createLogger({ service: "consumer", version: "test", level: "info", destination }),
    );
    const good = placedAbout("g", `good-${crypto.randomUUID()}`);
    const forged = placedAbout("f", `forged-${crypto.randomUUID()}`);
    const { results } = await deliver([good, forged]);
    expect(results?.map((r) => [r.eventId, r.duplicate, r.error])).toEqual([
      [good.id, false, undefined],
      [forged.id, false, undefined],
    ]);
    const recorded = await producer.db
      .select({ eventId: inbox.eventId, outcome: inbox.outcome, refusal: inbox.refusal })
      .from(inbox)
      .where(inArray(inbox.eventId, [good.id, forged.id]));
    expect(recorded).toEqual(
      expect.arrayContaining([
        { eventId: good.id, outcome: "applied", refusal: null },
        { eventId: forged.id, outcome: "refused", refusal: "the order says otherwise" },
      ]),
    );
    const applied = await producer.db
      .select({ eventId: effects.eventId })
      .from(effects)
      .where(inArray(effects.eventId, [good.id, forged.id]));
    expect(applied).toEqual([{ eventId: good.id }]);
    // A redelivery is a duplicate like any other.
    expect((await deliver([forged])).results).toMatchObject([{ duplicate: true }]);
    const counts = (await metrics.inboxEvents.get()).values.map(({ labels, value }) => [
      labels.outcome,
      value,
    ]);
    expect(counts).toEqual(
      expect.arrayContaining([
        ["applied", 1],
        ["refused", 1],
        ["duplicate", 1],
      ]),
    );
    await eventually(() =>
      expect(lines.filter((line) => line.level === "warn")).toEqual([
        expect.objectContaining({
          eventId: forged.id,
          eventType: OrderPlacedSchema.typeName,
          subject: "f",
          orderId: expect.stringMatching(/^forged-/),
          reason: "the order says otherwise",
          msg: expect.stringContaining("refused"),
        }),
      ]),
    );
  });

  it("runs a handler's after-commit work once its transaction committed, and never for one rolled back", async () => {
    const ran: { orderId: string; inboxed: Promise<boolean> }[] = [];
    const deliver = inProcessSink(async (placed, { tx, event, afterCommit }) => {
      afterCommit(() => {
        // Another connection sees the commit: it has happened.
        const inboxed = producer.db
          .select()
          .from(inbox)
          .where(eq(inbox.eventId, event.id))
          .then((rows) => rows.length === 1);
        ran.push({ orderId: placed.orderId, inboxed });
      });
      await tx.insert(effects).values({ eventId: event.id, orderId: placed.orderId, quantity: 1 });
      if (placed.orderId === "fails") throw unavailable("not now");
    });
    // The batch fails as a whole, then each event goes alone: the good one's work runs once.
    const { results } = await deliver([placedAbout("a", "works"), placedAbout("b", "fails")]);
    expect(results?.map((r) => r.error?.code)).toEqual([undefined, "unavailable"]);
    expect(ran.map((r) => r.orderId)).toEqual(["works"]);
    expect(await ran[0]!.inboxed).toBe(true);
  });

  it("is refused as a whole when one event is malformed", async () => {
    const { bus } = producerBus({ consumer: consumer.url });
    const good = await committedEvent(bus, crypto.randomUUID(), 1);
    const error = await rpcError(
      eventSinkClient(consumer.url).deliver({ events: [good, { ...good, id: "not-a-uuid" }] }),
    );
    expect(error.code).toBe(Code.InvalidArgument);
    expect(error.message).toMatch(/events\[1\]\.id/);
  });
});

describe("relay", () => {
  it("sends a backlog in few calls, each event once", async () => {
    const sink = await startRecordingEventSink();
    cleanups.push(() => sink.close());
    const metrics = createMetrics("producer");
    const { bus, relay } = producerBus(
      { consumer: sink.url, slowpoke: sink.url },
      { concurrency: 1, batchSize: 10, metrics },
    );
    const ids: string[] = [];
    for (let i = 0; i < 25; i++) ids.push(await placeOrder(bus, crypto.randomUUID()));
    relay.start();
    await eventually(async () => {
      const [counted] = rowsOf<{ pending: number }>(
        await producer.db.execute(
          sql`select count(*)::int as pending from outbox_deliveries where status <> 'delivered'`,
        ),
      );
      expect(counted?.pending).toBe(0);
    });
    // Two subscribers, one sink: 50 deliveries in calls of at most 10, in publishing order.
    expect(sink.batches.reduce((a, b) => a + b, 0)).toBe(50);
    expect(Math.max(...sink.batches)).toBe(10);
    expect(sink.batches.length).toBeLessThanOrEqual(6);
    expect(sink.received.map((e) => e.id)).toEqual(ids);
    // What the relay counted agrees with what the sink saw.
    const calls = (await metrics.outboxBatchEvents.get()).values
      .filter((v) => v.metricName === "outbox_delivery_batch_events_count")
      .reduce((sum, v) => sum + v.value, 0);
    expect(calls).toBe(sink.batches.length);
    const delivered = (await metrics.outboxDeliveries.get()).values;
    expect(delivered.map((v) => [v.labels.subscriber, v.labels.outcome, v.value]).sort()).toEqual([
      ["consumer", "accepted", 25],
      ["slowpoke", "accepted", 25],
    ]);
  });

  it("takes its own commits' events without claiming them, and records them with the next poll's claim", async () => {
    const sink = await startRecordingEventSink();
    cleanups.push(() => sink.close());
    // Every statement the relay sends, to see which ones claim.
    const statements: string[] = [];
    const db = new Proxy(producer.db, {
      get: (target, property, receiver) =>
        property === "execute"
          ? (query: Parameters<typeof target.execute>[0]) => {
              statements.push(new PgDialect().sqlToQuery(query as SQL).sql);
              return target.execute(query);
            }
          : Reflect.get(target, property, receiver),
    });
    // No poll within the test: it is played by wake().
    const { bus, relay } = producerBus(
      { consumer: sink.url, slowpoke: sink.url },
      { db, pollIntervalMs: 60_000 },
    );
    relay.start();
    // The lanes' first look, at start, finds nothing.
    await eventually(() => expect(statements.filter((q) => /claimed as/.test(q))).toHaveLength(2));
    statements.length = 0;
    const first = await placeOrder(bus, crypto.randomUUID());
    const sent = () => sink.batches.reduce((a, b) => a + b, 0);
    // One sink for both subscribers: each sent it once, and nothing was claimed.
    await eventually(() => expect(sent()).toBe(2));
    expect(sink.received.map((e) => e.id)).toEqual([first]);
    expect(statements).toEqual([]);
    // Written leased to the relay, as its first attempt; accepted, but nothing written since.
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(await deliveryStates(first)).toMatchObject([
      { subscriber: "consumer", status: "pending", attempts: 1 },
      { subscriber: "slowpoke", status: "pending", attempts: 1 },
    ]);
    expect(statements).toEqual([]);
    // The poll's claim records it.
    relay.wake();
    await eventually(async () => {
      expect(await deliveryStates(first)).toMatchObject([
        { subscriber: "consumer", status: "delivered" },
        { subscriber: "slowpoke", status: "delivered" },
      ]);
    });
    // Stopping records what finished last.
    const second = await placeOrder(bus, crypto.randomUUID());
    await eventually(() => expect(sent()).toBe(4));
    await relay.stop();
    expect(await deliveryStates(second)).toMatchObject([
      { subscriber: "consumer", status: "delivered" },
      { subscriber: "slowpoke", status: "delivered" },
    ]);
  });

  it("claims what it has no room to take, and gives up what it took but did not send when it stops", async () => {
    const sink = await startRecordingEventSink(undefined, { delayMs: 150 });
    cleanups.push(() => sink.close());
    // Room for 4 taken deliveries per lane (4 × concurrency × batch size).
    const { bus, relay } = producerBus(
      { consumer: sink.url, slowpoke: sink.url },
      { concurrency: 1, batchSize: 1, pollIntervalMs: 60_000 },
    );
    relay.start();
    const ids: string[] = [];
    for (let i = 0; i < 8; i++) ids.push(await placeOrder(bus, crypto.randomUUID()));
    const leased = async () =>
      rowsOf<{ leased: number; claimable: number }>(
        await producer.db.execute(sql`
          select count(*) filter (where lease_until > now())::int as leased,
                 count(*) filter (where lease_until is null and attempts = 0)::int as claimable
            from outbox_deliveries where status = 'pending'`),
      )[0]!;
    // Per lane: one call in flight, 4 taken behind it, the other 3 left to a claim.
    const before = await leased();
    expect(before.claimable).toBeGreaterThanOrEqual(2 * 3 - 2);
    await relay.stop();
    // Stopped: whatever it took and did not send is claimable at once, not when leases lapse.
    const after = await leased();
    expect(after.leased).toBe(0);
    // A relay that starts now delivers the rest at once, each event once per subscriber.
    const next = producerBus({ consumer: sink.url, slowpoke: sink.url }, { batchSize: 8 });
    next.relay.start();
    await eventually(async () => {
      const states = rowsOf<{ status: string }>(
        await producer.db.execute(sql`select status from outbox_deliveries`),
      );
      expect(states.filter((s) => s.status !== "delivered")).toEqual([]);
    }, 5000);
    await next.relay.stop();
    expect(sink.batches.reduce((a, b) => a + b, 0)).toBe(16);
    expect(new Set(sink.received.map((e) => e.id))).toEqual(new Set(ids));
  });

  it("leaves what a replica took at commit to it until the lease runs out, should it die", async () => {
    const sink = await startRecordingEventSink();
    cleanups.push(() => sink.close());
    // A replica whose relay takes its commit's events and dies before sending them.
    const dying = createEventBus({
      source: "producer",
      db: producer.db,
      subscriptions,
      produces: [OrderPlacedSchema],
    });
    let handedOver = 0;
    dying.handOffTo({
      leaseMsFor: () => 500,
      committed: (taken) => {
        for (const events of taken.values()) handedOver += events.length;
      },
    });
    const survivor = producerBus(
      { consumer: sink.url, slowpoke: sink.url },
      { pollIntervalMs: 50 },
    );
    survivor.relay.start();
    const eventId = await placeOrder(dying, crypto.randomUUID());
    const committedAt = Date.now();
    expect(handedOver).toBe(2);
    // The survivor polls every 50 ms, but claims the deliveries only once their lease lapsed.
    await eventually(() => expect(sink.batches.reduce((a, b) => a + b, 0)).toBe(2), 3000);
    expect(Date.now() - committedAt).toBeGreaterThanOrEqual(400);
    expect(sink.received.map((e) => e.id)).toEqual([eventId]);
    await eventually(async () => {
      expect((await deliveryStates(eventId)).map((s) => s.status)).toEqual([
        "delivered",
        "delivered",
      ]);
    });
  });

  it("delivers what a killed relay had taken within a few seconds of its death, once", async (context) => {
    // A process of its own, to SIGKILL: only with a Postgres both processes can open.
    if (!producerDb.url) return context.skip();
    // The dying process's subscriber: takes the calls and never answers, so they stay in flight.
    let calls = 0;
    const hanging = createServer(() => {
      calls++;
    });
    await new Promise<void>((resolve) => hanging.listen(0, "127.0.0.1", resolve));
    cleanups.push(async () => {
      hanging.closeAllConnections();
      await new Promise((resolve) => hanging.close(resolve));
    });
    const { port } = hanging.address() as AddressInfo;
    const dying = spawnNode(
      ["--import", "tsx", "packages/platform/test/fixtures/relay-process.ts"],
      {
        DATABASE_URL: producerDb.url,
        SUBSCRIBER_URL: `http://127.0.0.1:${port}`,
        EVENTS: "3",
      },
    );
    cleanups.push(async () => {
      dying.child.kill("SIGKILL");
      await dying.exited;
    });
    const ids = (await dying.waitFor(/^published /, 60_000)).slice("published ".length).split(",");
    // Both lanes have a call in flight, and have renewed their leases for a while.
    await eventually(() => expect(calls).toBe(2));
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    dying.child.kill("SIGKILL");
    await dying.exited;
    const killedAt = Date.now();

    const sink = await startRecordingEventSink();
    cleanups.push(() => sink.close());
    const restarted = producerBus({ consumer: sink.url, slowpoke: sink.url });
    restarted.relay.start();
    await eventually(async () => {
      const states = await producer.db
        .select({ status: outboxDeliveries.status })
        .from(outboxDeliveries)
        .where(inArray(outboxDeliveries.eventId, ids));
      expect(states.map((state) => state.status)).toEqual(Array(6).fill("delivered"));
    }, 20_000);
    // The dead relay's leases ran out within one (default) lease, not the old 30 s.
    expect(Date.now() - killedAt).toBeLessThan(5_000);
    // Each event once per subscriber: the restarted relay did nothing twice.
    expect(sink.batches.reduce((a, b) => a + b, 0)).toBe(6);
    expect(new Set(sink.received.map((e) => e.id))).toEqual(new Set(ids));
  }, 90_000);

  it("keeps its leases while it lives, however long a call takes: no other relay delivers the same events", async () => {
    // Each call outlasts the lease several times over.
    const sink = await startRecordingEventSink(undefined, { delayMs: 4_000 });
    cleanups.push(() => sink.close());
    const urls = { consumer: sink.url, slowpoke: sink.url };
    const first = producerBus(urls, { leaseMs: 1_500 });
    const second = producerBus(urls, { leaseMs: 1_500 });
    first.relay.start();
    second.relay.start();
    // The first relay takes its commit's deliveries; the second polls every 50 ms.
    const eventId = await placeOrder(first.bus, crypto.randomUUID());
    await eventually(async () => {
      expect((await deliveryStates(eventId)).map((s) => s.status)).toEqual([
        "delivered",
        "delivered",
      ]);
    }, 15_000);
    expect(sink.batches.reduce((a, b) => a + b, 0)).toBe(2);
  });

  it("parks only the malformed event of a call refused as a whole", async () => {
    const { bus, relay } = producerBus({ consumer: consumer.url }, { concurrency: 1 });
    const orderId = crypto.randomUUID();
    const goodId = await placeOrder(bus, orderId, 4);
    // An envelope the sink's validation refuses (no source), as a buggy producer might write.
    const badId = await placeOrder(bus, crypto.randomUUID());
    const [bad] = await readOutboxEvents(producer.db, { id: badId });
    await producer.db.execute(
      sql`update outbox_events set envelope = ${toBinary(EventSchema, { ...bad!.envelope, source: "" })} where id = ${badId}`,
    );
    relay.start();
    await eventually(async () => {
      expect((await deliveryStates(goodId)).map((s) => s.status)).toEqual([
        "delivered",
        "delivered",
      ]);
      expect((await deliveryStates(badId)).map((s) => s.status)).toEqual(["dead", "dead"]);
    });
    expect(await consumerEffects(orderId)).toEqual([expect.objectContaining({ quantity: 4 })]);
    const [dead] = (await listDeadDeliveries(producer.db)).filter((d) => d.eventId === badId);
    expect(dead?.lastError).toMatch(/source/);
  });

  it("backs off and parks an event as dead after the last attempt, where it can be re-driven", async () => {
    const port = await freePort();
    const { bus, relay } = producerBus(
      { consumer: `http://127.0.0.1:${port}` },
      { maxAttempts: 3 },
    );
    relay.start();
    const orderId = crypto.randomUUID();
    const eventId = await placeOrder(bus, orderId);
    await eventually(async () => {
      expect((await deliveryStates(eventId)).map((s) => s.status)).toEqual(["dead", "dead"]);
    });
    const dead = await listDeadDeliveries(producer.db);
    expect(dead.filter((d) => d.eventId === eventId)).toHaveLength(2);
    expect(dead[0]).toMatchObject({
      type: OrderPlacedSchema.typeName,
      subject: orderId,
      attempts: 3,
    });
    expect(dead[0]?.lastError).toBeTruthy();

    const db = await createTestDatabase("platform_redrive");
    const back = await startService(consumerService, testEnv(db, { PORT: String(port) }));
    cleanups.push(async () => {
      await back.stop();
      await db.drop();
    });
    await back.ready;
    expect(await redriveDeadDeliveries(producer.db, { subscriber: "consumer" })).toBe(1);
    relay.wake();
    await eventually(async () => {
      expect(await deliveryStates(eventId)).toMatchObject([
        { subscriber: "consumer", status: "delivered" },
        { subscriber: "slowpoke", status: "dead" },
      ]);
    });
  });

  it("parks an event a consumer can never accept at once", async () => {
    const bus = createEventBus({
      source: "producer",
      db: producer.db,
      subscriptions: new Map([["shop.events.v1.StockReserved", ["consumer"]]]),
      produces: [
        (await import("@thinmesh/contracts/shop/events/v1/saga_pb.js")).StockReservedSchema,
      ],
    });
    const relay = createRelay({
      db: producer.db,
      bus,
      subscriberUrls: { consumer: consumer.url },
      logger,
      pollIntervalMs: 50,
    });
    cleanups.push(() => relay.stop());
    relay.start();
    const { StockReservedSchema } = await import("@thinmesh/contracts/shop/events/v1/saga_pb.js");
    const eventId = await bus.transaction((_tx, publish) =>
      publish(StockReservedSchema, create(StockReservedSchema, { orderId: "o" }), "o"),
    );
    await eventually(async () => {
      expect(await deliveryStates(eventId)).toMatchObject([{ status: "dead", attempts: 1 }]);
    });
    const [dead] = (await listDeadDeliveries(producer.db)).filter((d) => d.eventId === eventId);
    expect(dead?.lastError).toMatch(/does not consume shop.events.v1.StockReserved/);
  });

  it("keeps delivering to a healthy subscriber while another is slow", async () => {
    const db = await createTestDatabase("platform_slow");
    const slow = await startService(consumerService, testEnv(db, { DELAY_MS: "3000" }));
    cleanups.push(async () => {
      await slow.stop();
      await db.drop();
    });
    await slow.ready;
    const { bus, relay } = producerBus(
      { consumer: consumer.url, slowpoke: slow.url },
      { concurrency: 2 },
    );
    relay.start();
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) ids.push(await placeOrder(bus, crypto.randomUUID()));
    await eventually(async () => {
      for (const id of ids) {
        expect((await deliveryStates(id)).find((s) => s.subscriber === "consumer")?.status).toBe(
          "delivered",
        );
      }
    }, 2000);
    for (const id of ids) {
      expect((await deliveryStates(id)).find((s) => s.subscriber === "slowpoke")?.status).toBe(
        "pending",
      );
    }
  });

  it("lets several replicas relay at once without losing or double-applying events", async () => {
    const replicas = [
      producerBus({ consumer: consumer.url }),
      producerBus({ consumer: consumer.url }),
    ];
    for (const { relay } of replicas) relay.start();
    const orders = Array.from({ length: 30 }, () => crypto.randomUUID());
    await Promise.all(orders.map((orderId, i) => placeOrder(replicas[i % 2]!.bus, orderId)));
    await eventually(async () => {
      const [counted] = rowsOf<{ pending: number }>(
        await producer.db.execute(
          sql`select count(*)::int as pending from outbox_deliveries where status <> 'delivered'`,
        ),
      );
      expect(counted?.pending).toBe(0);
    });
    for (const orderId of orders) expect(await consumerEffects(orderId)).toHaveLength(1);
  });
});

describe("retention", () => {
  it("prunes old events every subscriber accepted and old inbox records, nothing else", async () => {
    const { bus } = producerBus({ consumer: consumer.url });
    const [oldDelivered, oldPending, oldDead, recentDelivered] = [
      await placeOrder(bus, crypto.randomUUID()),
      await placeOrder(bus, crypto.randomUUID()),
      await placeOrder(bus, crypto.randomUUID()),
      await placeOrder(bus, crypto.randomUUID()),
    ];
    const ids = (list: string[]) => `{${list.join(",")}}`;
    await producer.db.execute(
      sql`update outbox_deliveries set status = 'delivered' where event_id = any(${ids([oldDelivered, recentDelivered])}::uuid[])`,
    );
    // One of oldPending's two subscribers has it; the other does not yet.
    await producer.db.execute(
      sql`update outbox_deliveries set status = 'delivered' where event_id = ${oldPending} and subscriber = 'consumer'`,
    );
    await producer.db.execute(
      sql`update outbox_deliveries set status = 'dead' where event_id = ${oldDead}`,
    );
    await producer.db.execute(
      sql`update outbox_events set created_at = now() - interval '8 days' where id = any(${ids([oldDelivered, oldPending, oldDead])}::uuid[])`,
    );
    const [oldRecord, recentRecord] = [crypto.randomUUID(), crypto.randomUUID()];
    await producer.db.execute(sql`
      insert into inbox (event_id, type, source, handled_at)
      values (${oldRecord}, 't', 's', now() - interval '8 days'), (${recentRecord}, 't', 's', now())`);

    expect(await pruneEvents(producer.db, 7 * 24, 2)).toEqual({ events: 1, inbox: 1 });
    const left = rowsOf<{ id: string }>(
      await producer.db.execute(sql`select id from outbox_events`),
    );
    expect(left.map((r) => r.id).sort()).toEqual([oldPending, oldDead, recentDelivered].sort());
    expect(await deliveryStates(oldDelivered)).toEqual([]);
    const inboxLeft = rowsOf<{ event_id: string }>(
      await producer.db.execute(
        sql`select event_id from inbox where event_id = any(${ids([oldRecord, recentRecord])}::uuid[])`,
      ),
    );
    expect(inboxLeft.map((r) => r.event_id)).toEqual([recentRecord]);
    expect(await pruneEvents(producer.db, 7 * 24)).toEqual({ events: 0, inbox: 0 });
  });
});

describe("dead-letter routes", () => {
  it("list and re-drive parked events for admins only, and refuse bad requests", async () => {
    const { Hono } = await import("hono");
    const { createTestIssuer } = await import("../src/testing/index.js");
    const { createTokenVerifier, deadLetterRoutes, DomainError } = await import("../src/index.js");
    const issuer = await createTestIssuer();
    cleanups.push(() => issuer.close());
    const app = new Hono();
    app.onError((error, c) =>
      error instanceof DomainError
        ? c.json({ code: error.kind }, error.kind === "invalid_argument" ? 400 : 403)
        : c.json({ code: "internal" }, 500),
    );
    let woken = 0;
    const verifier = createTokenVerifier({
      keys: new URL(issuer.jwksUrl),
      issuer: issuer.issuer,
      audience: issuer.audience,
    });
    deadLetterRoutes(app, producer.db, verifier, () => woken++);

    const { bus } = producerBus({ consumer: "http://127.0.0.1:9" });
    const eventId = await placeOrder(bus, crypto.randomUUID());
    await producer.db.execute(
      sql`update outbox_deliveries set status = 'dead', attempts = 25 where event_id = ${eventId}`,
    );

    const admin = { authorization: `Bearer ${await issuer.token({ roles: ["admin"] })}` };
    const customer = { authorization: `Bearer ${await issuer.token({ roles: ["customer"] })}` };
    expect((await app.request("/admin/outbox/dead")).status).toBe(401);
    expect((await app.request("/admin/outbox/dead", { headers: customer })).status).toBe(403);
    const listed = await app.request("/admin/outbox/dead", { headers: admin });
    expect(
      ((await listed.json()) as { dead: { eventId: string }[] }).dead.map((d) => d.eventId),
    ).toContain(eventId);

    const redrive = (body: string) =>
      app.request("/admin/outbox/redrive", { method: "POST", headers: admin, body });
    for (const bad of [
      "{not json",
      '{"eventId":"nope"}',
      '{"subscriber":"Not A Name"}',
      '{"other":1}',
    ]) {
      expect((await redrive(bad)).status).toBe(400);
    }
    expect((await deliveryStates(eventId)).map((s) => s.status)).toEqual(["dead", "dead"]);
    expect(
      await (await redrive(JSON.stringify({ eventId, subscriber: "consumer" }))).json(),
    ).toEqual({ redriven: 1 });
    expect(woken).toBe(1);
    expect(await deliveryStates(eventId)).toMatchObject([
      { status: "pending", attempts: 0 },
      { status: "dead" },
    ]);
  });
});
