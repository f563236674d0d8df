import { randomUUID } from "node:crypto";
import { create, type DescMessage, type MessageShape, toBinary } from "@bufbuild/protobuf";
import { anyPack, timestampNow } from "@bufbuild/protobuf/wkt";
import { EventSchema } from "@thinmesh/contracts/shop/events/v1/events_pb.js";
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
   * back with the rest of fn's writes; after a commit the relay is woken at once.
   */
  transaction<T>(fn: (tx: AnyExecutor, publish: Publish) => Promise<T>): Promise<T>;
  /**
   * Runs one statement that also writes `events` to the outbox. A statement is atomic on its
   * own: its writes and the events commit together in one round trip, with no BEGIN and
   * COMMIT to wait for. `statement` receives the outbox's WITH entries to put first in its
   * WITH clause. After it, the relay is woken as after transaction(). Returns the
   * statement's result as the driver gives it.
   */
  executePublishing(events: Publication[], statement: (outbox: SQL) => SQL): Promise<unknown>;
  /**
   * Called after a commit that published events, with the subscribers they are for (the
   * relay subscribes here).
   */
  onCommit(listener: (subscribers: ReadonlySet<string>) => void): void;
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
  const listeners: ((subscribers: ReadonlySet<string>) => void)[] = [];

  /** An event ready to write, as one element of the JSON the flush sends. */
  const rowOf = <Desc extends DescMessage>(
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
    return {
      id: event.id,
      type: event.type,
      subject,
      envelope: Buffer.from(toBinary(EventSchema, event)).toString("base64"),
      subscribers,
    };
  };

  /** The WITH entries that write the events and their deliveries to the outbox. */
  const outboxEntries = (rows: ReturnType<typeof rowOf>[]) => sql`
      outbox_event as (
        select * from jsonb_to_recordset(${JSON.stringify(rows)}::jsonb)
          as e(id uuid, type text, subject text, envelope text, subscribers text[])),
      outbox_stored as (
        insert into ${outboxEvents} (id, type, subject, envelope)
        select id, type, subject, decode(envelope, 'base64') from outbox_event),
      outbox_delivery as (
        insert into ${outboxDeliveries} (event_id, subscriber)
        select outbox_event.id, subscriber
          from outbox_event, unnest(outbox_event.subscribers) as subscriber)`;

  /**
   * One statement for every event of a transaction and their deliveries, sent with the
   * COMMIT where the driver allows.
   */
  async function flush(tx: AnyExecutor, rows: ReturnType<typeof rowOf>[]) {
    if (rows.length === 0) return;
    await writeAtCommit(tx, sql`with ${outboxEntries(rows)} select count(*) from outbox_event`);
  }

  const notify = (subscribers: ReadonlySet<string>) => {
    if (subscribers.size > 0) for (const listener of listeners) listener(subscribers);
  };

  return {
    routes,
    async transaction(fn) {
      const notified = new Set<string>();
      const result = await options.db.transaction(async (tx) => {
        const rows: ReturnType<typeof rowOf>[] = [];
        const value = await fn(tx, async (schema, data, subject) => {
          const row = rowOf(schema, data, subject);
          rows.push(row);
          for (const subscriber of row.subscribers) notified.add(subscriber);
          return row.id;
        });
        await flush(tx, rows);
        return value;
      });
      notify(notified);
      return result;
    },
    async executePublishing(events, statement) {
      const rows = events.map(({ schema, data, subject }) => rowOf(schema, data, subject));
      const result = await options.db.execute(statement(outboxEntries(rows)));
      notify(new Set(rows.flatMap((row) => row.subscribers)));
      return result;
    },
    onCommit(listener) {
      listeners.push(listener);
    },
  };
}
