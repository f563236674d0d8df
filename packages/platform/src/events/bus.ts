import { randomUUID } from "node:crypto";
import { create, type DescMessage, type MessageShape, toBinary } from "@bufbuild/protobuf";
import { anyPack, timestampNow } from "@bufbuild/protobuf/wkt";
import { type Event, EventSchema } from "@thinmesh/contracts/shop/events/v1/events_pb.js";
import { type SQL, sql } from "drizzle-orm";
import { currentContext } from "../context.js";
import { type AppDatabase, type Executor, writeAtCommit } from "../database.js";
import { outboxDeliveries, outboxEvents } from "./schema.js";
import type { Subscriptions } from "./subscriptions.js";

// Outbox code works on any service's database; the service's own schema type is irrelevant.
// biome-ignore lint/suspicious/noExplicitAny: see above
export type AnyExecutor = Executor<any>;
// biome-ignore lint/suspicious/noExplicitAny: see above
type AnyDatabase = AppDatabase<any>;

/**
 * Adds an event to the outbox of the caller's transaction; returns the event id. The events
 * of a transaction are written together when its function returns, before the commit.
 */
export type Publish = <Desc extends DescMessage>(
  schema: Desc,
  data: MessageShape<Desc>,
  subject: string,
) => Promise<string>;

/** An event to publish: its message and the subject (the entity it is about). */
export interface Publication<Desc extends DescMessage = DescMessage> {
  schema: Desc;
  data: MessageShape<Desc>;
  subject: string;
}

export interface EventBus {
  /** The event types this service produces, each with its subscribers. */
  readonly routes: ReadonlyMap<string, readonly string[]>;
  /**
   * Runs fn in one database transaction. Events published through `publish` commit or roll
   * back with the rest of fn's writes; after a commit the relay has them at once.
   */
  transaction<T>(fn: (tx: AnyExecutor, publish: Publish) => Promise<T>): Promise<T>;
  /**
   * Runs one statement that also writes `events` to the outbox. A statement is atomic on its
   * own: its writes and the events commit together in one round trip, with no BEGIN and
   * COMMIT to wait for. `statement` receives the outbox's WITH entries to put first in its
   * WITH clause. After it, the relay has the events as after transaction(). Returns the
   * statement's result as the driver gives it.
   */
  executePublishing(events: Publication[], statement: (outbox: SQL) => SQL): Promise<unknown>;
  /**
   * Lets this process's relay take the deliveries it is ready for straight from the commit
   * (see OutboxHandoff). Without one, every delivery waits for a relay to claim it.
   */
  handOffTo(handoff: OutboxHandoff): void;
}

/** A committed event, as the relay delivers it. */
export interface CommittedEvent {
  id: string;
  event: Event;
  envelope: Uint8Array;
}

/**
 * The committing process's relay, which already has the events it would otherwise claim
 * back from the table. The deliveries it takes are written leased to it, so no other relay
 * claims them while it delivers; should it die first, the leases run out and a claim finds
 * them like any other.
 */
export interface OutboxHandoff {
  /** How long a delivery to `subscriber` written now is leased to this relay; 0 if not taken. */
  leaseMsFor(subscriber: string): number;
  /** After the commit: the taken events, by subscriber, and the subscribers left to claim. */
  committed(taken: ReadonlyMap<string, CommittedEvent[]>, toClaim: ReadonlySet<string>): void;
}

export interface EventBusOptions {
  /** This service's name: the events' source. */
  source: string;
  db: AnyDatabase;
  subscriptions: Subscriptions;
  /** Message types this service publishes; publishing anything else is a bug. */
  produces: readonly DescMessage[];
}

/** The transactional outbox of one service. */
export function createEventBus(options: EventBusOptions): EventBus {
  const routes = new Map(
    options.produces.map((schema) => [
      schema.typeName,
      options.subscriptions.get(schema.typeName) ?? [],
    ]),
  );
  let handoff: OutboxHandoff | undefined;

  /** An event ready to write, and the subscribers it goes to. */
  const pendingOf = <Desc extends DescMessage>(
    schema: Desc,
    data: MessageShape<Desc>,
    subject: string,
  ) => {
    const subscribers = routes.get(schema.typeName);
    if (!subscribers) {
      throw new Error(`${options.source} does not declare that it produces ${schema.typeName}`);
    }
    const context = currentContext();
    const event = create(EventSchema, {
      id: randomUUID(),
      source: options.source,
      type: schema.typeName,
      subject,
      time: timestampNow(),
      traceparent: context?.propagation.traceparent ?? "",
      tracestate: context?.propagation.tracestate ?? "",
      data: anyPack(schema, data),
    });
    return { id: event.id, event, envelope: toBinary(EventSchema, event), subscribers };
  };
  type Pending = ReturnType<typeof pendingOf>;

  /**
   * The WITH entries that write the events and their deliveries to the outbox, and what to
   * tell the relay once they are committed. A delivery the relay takes is written leased to
   * it and counted as its first attempt, as a claim would have.
   */
  const outboxWrite = (events: Pending[]) => {
    const subscribers = new Set(events.flatMap((e) => e.subscribers));
    const leases = new Map<string, number>();
    for (const subscriber of subscribers) {
      const leaseMs = handoff?.leaseMsFor(subscriber) ?? 0;
      if (leaseMs > 0) leases.set(subscriber, leaseMs);
    }
    const rows = events.map((e) => ({
      id: e.id,
      type: e.event.type,
      subject: e.event.subject,
      envelope: Buffer.from(e.envelope.buffer, e.envelope.byteOffset, e.envelope.length).toString(
        "base64",
      ),
      subscribers: e.subscribers,
      lease_ms: e.subscribers.map((s) => leases.get(s) ?? 0),
    }));
    const entries = sql`
      outbox_event as (
        select * from jsonb_to_recordset(${JSON.stringify(rows)}::jsonb)
          as e(id uuid, type text, subject text, envelope text, subscribers text[], lease_ms int[])),
      outbox_stored as (
        insert into ${outboxEvents} (id, type, subject, envelope)
        select id, type, subject, decode(envelope, 'base64') from outbox_event),
      outbox_delivery as (
        insert into ${outboxDeliveries} (event_id, subscriber, attempts, lease_until)
        select outbox_event.id, delivery.subscriber, (delivery.lease_ms > 0)::int,
               case when delivery.lease_ms > 0
                    then now() + delivery.lease_ms * interval '1 millisecond' end
          from outbox_event,
               unnest(outbox_event.subscribers, outbox_event.lease_ms) as delivery(subscriber, lease_ms))`;
    const committed = () => {
      if (!handoff || subscribers.size === 0) return;
      const taken = new Map<string, CommittedEvent[]>();
      for (const subscriber of leases.keys()) {
        taken.set(
          subscriber,
          events.filter((e) => e.subscribers.includes(subscriber)),
        );
      }
      handoff.committed(taken, new Set([...subscribers].filter((s) => !leases.has(s))));
    };
    return { entries, committed };
  };

  return {
    routes,
    async transaction(fn) {
      let committed: (() => void) | undefined;
      const result = await options.db.transaction(async (tx) => {
        const events: Pending[] = [];
        const value = await fn(tx, async (schema, data, subject) => {
          const pending = pendingOf(schema, data, subject);
          events.push(pending);
          return pending.id;
        });
        // One statement for every event of the transaction and their deliveries, sent with
        // the COMMIT where the driver allows.
        if (events.length > 0) {
          const write = outboxWrite(events);
          await writeAtCommit(tx, sql`with ${write.entries} select count(*) from outbox_event`);
          committed = write.committed;
        }
        return value;
      });
      committed?.();
      return result;
    },
    async executePublishing(publications, statement) {
      const write = outboxWrite(
        publications.map(({ schema, data, subject }) => pendingOf(schema, data, subject)),
      );
      const result = await options.db.execute(statement(write.entries));
      write.committed();
      return result;
    },
    handOffTo(relay) {
      handoff = relay;
    },
  };
}
