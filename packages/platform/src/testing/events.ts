import { randomUUID } from "node:crypto";
import {
  create,
  createRegistry,
  type DescMessage,
  fromBinary,
  type MessageInitShape,
} from "@bufbuild/protobuf";
import { anyPack, anyUnpack, timestampNow } from "@bufbuild/protobuf/wkt";
import {
  type CallOptions,
  type Client,
  Code,
  ConnectError,
  type ConnectRouter,
  createClient,
} from "@connectrpc/connect";
import { codeFromString } from "@connectrpc/connect/protocol-connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import {
  type Event,
  EventSchema,
  EventSinkService,
} from "@thinmesh/contracts/shop/events/v1/events_pb.js";
import { and, asc, eq } from "drizzle-orm";
import type { AnyExecutor } from "../events/bus.js";
import { outboxEvents } from "../events/schema.js";
import { startFakePeer, type TestServer } from "./peers.js";

/** A fake subscriber: where it listens, and the events delivered to it. */
export interface RecordingEventSink extends TestServer {
  /** Every event delivered, in the order they arrived, each event id once. */
  received: Event[];
  /** How many events each Deliver call carried, in the order the calls arrived. */
  batches: number[];
}

/**
 * A stand-in for a subscriber of a service's events: an EventSinkService on a free loopback
 * port that keeps every event a relay delivers and, like a real sink, answers `duplicate`
 * for an event id it already has. `routes` serves more of the peer's services on that port;
 * `delayMs` makes every call take that long (a slow consumer).
 */
export async function startRecordingEventSink(
  routes?: (router: ConnectRouter) => void,
  { delayMs = 0 }: { delayMs?: number } = {},
): Promise<RecordingEventSink> {
  const received: Event[] = [];
  const batches: number[] = [];
  const server = await startFakePeer((router) => {
    router.service(EventSinkService, {
      async deliver(request) {
        batches.push(request.events.length);
        if (delayMs > 0) await new Promise((resolve) => setTimeout(resolve, delayMs));
        const results = request.events.map((event) => {
          const duplicate = received.some((seen) => seen.id === event.id);
          if (!duplicate) received.push(event);
          return { eventId: event.id, duplicate };
        });
        return { results };
      },
    });
    routes?.(router);
  });
  return { ...server, received, batches };
}

export interface EventSinkTestClient extends Client<typeof EventSinkService> {
  /**
   * Delivers one event and answers like a plain RPC: `duplicate`, or the event's error
   * thrown as a ConnectError (rpcError() reads it like any other).
   */
  deliverOne(event: Event, options?: CallOptions): Promise<{ duplicate: boolean }>;
}

/** A client of a service's EventSinkService, to deliver events the way a producer's relay does. */
export function eventSinkClient(baseUrl: string): EventSinkTestClient {
  const client = createClient(
    EventSinkService,
    createConnectTransport({ baseUrl, httpVersion: "1.1" }),
  );
  return {
    ...client,
    async deliverOne(event, options) {
      const { results } = await client.deliver({ events: [event] }, options);
      const [result] = results;
      if (!result) throw new Error("the sink answered no result for the event");
      if (result.error) {
        throw new ConnectError(
          result.error.message,
          codeFromString(result.error.code) ?? Code.Unknown,
        );
      }
      return { duplicate: result.duplicate };
    },
  };
}

/** The envelope fields a test chooses; the id and time are always fresh. */
export interface EventEnvelopeFields {
  /** The service that produced the event. */
  source: string;
  /** What the event is about (in the saga, the order id). */
  subject?: string;
  /** The event type; the data's message type name unless given. */
  type?: string;
  /** W3C trace context of the step that produced the event. */
  traceparent?: string;
}

/**
 * A shop.events.v1.Event as a producer's outbox would deliver it: a fresh id and time, and
 * `data` packed as the message `schema` describes.
 */
export function buildEventEnvelope<Desc extends DescMessage>(
  schema: Desc,
  data: MessageInitShape<Desc>,
  fields: EventEnvelopeFields,
): Event {
  return create(EventSchema, {
    id: randomUUID(),
    source: fields.source,
    type: fields.type ?? schema.typeName,
    subject: fields.subject ?? "",
    time: timestampNow(),
    traceparent: fields.traceparent ?? "",
    data: anyPack(schema, create(schema, data)),
  });
}

/** An event envelope with its data unpacked. */
export interface DecodedEvent {
  envelope: Event;
  type: string;
  source: string;
  subject: string;
  /** The unpacked data; undefined when its type is not among the types asked for. */
  // biome-ignore lint/suspicious/noExplicitAny: tests read whichever event type it is
  data: any;
}

/**
 * Decodes an event envelope (binary, as the outbox stores it, or already parsed) and unpacks
 * its data with whichever of `dataTypes` it holds.
 */
export function decodeEvent(
  envelope: Event | Uint8Array,
  dataTypes: readonly DescMessage[] = [],
): DecodedEvent {
  const event = envelope instanceof Uint8Array ? fromBinary(EventSchema, envelope) : envelope;
  return {
    envelope: event,
    type: event.type,
    source: event.source,
    subject: event.subject,
    data: event.data && anyUnpack(event.data, createRegistry(...dataTypes)),
  };
}

/** Which committed events to read; every field given must match. */
export interface OutboxEventFilter {
  id?: string;
  subject?: string;
  type?: string;
}

/**
 * The events a service committed to its outbox (the platform's outbox_events table), oldest
 * first, decoded with `dataTypes` as decodeEvent does.
 */
export async function readOutboxEvents(
  db: AnyExecutor,
  filter: OutboxEventFilter,
  dataTypes: readonly DescMessage[] = [],
): Promise<DecodedEvent[]> {
  const rows = await db
    .select({ envelope: outboxEvents.envelope })
    .from(outboxEvents)
    .where(
      and(
        filter.id === undefined ? undefined : eq(outboxEvents.id, filter.id),
        filter.subject === undefined ? undefined : eq(outboxEvents.subject, filter.subject),
        filter.type === undefined ? undefined : eq(outboxEvents.type, filter.type),
      ),
    )
    .orderBy(asc(outboxEvents.createdAt));
  return rows.map((row) => decodeEvent(row.envelope, dataTypes));
}
