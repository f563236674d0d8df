import { create, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { anyUnpack } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import {
  DeliveryErrorSchema,
  type DeliveryResult,
  DeliveryResultSchema,
  type Event,
  type EventSinkService,
} from "@thinmesh/contracts/shop/events/v1/events_pb.js";
import { sql } from "drizzle-orm";
import { contextOfTrace, currentContext, runWithContext } from "../context.js";
import { rowsOf, writeAtCommit } from "../database.js";
import { toConnectError } from "../interceptors.js";
import type { Logger } from "../logger.js";
import type { Metrics } from "../metrics.js";
import { type PeerIdentity, peerIdentity } from "../peer-identity.js";
import type { AnyExecutor, EventBus, Publish } from "./bus.js";
import { inbox } from "./schema.js";
import type { Producers } from "./subscriptions.js";

export interface EventContext {
  /** The transaction the effect must use; the inbox record commits with it. */
  tx: AnyExecutor;
  /** Publishes follow-up events in the same transaction. */
  publish: Publish;
  event: Event;
  /**
   * Runs fn once the transaction has committed (in the event's trace); never if it rolls
   * back. For work that must not happen inside it, such as calling another company's API.
   */
  afterCommit(fn: () => void): void;
}

/**
 * A handler's answer to an event that contradicts what the service knows (an order in another
 * state, an amount that differs, an unknown entity). The handler must have written nothing:
 * the event is recorded in the inbox as refused, logged, and changes nothing else. The sender
 * is not asked to retry: the same event would get the same answer.
 */
export interface EventRefusal {
  refused: string;
  /** Fields for the log line (the entity's id, the values that did not match). */
  details?: Record<string, unknown> | undefined;
}

/** Refuses the event being handled (see EventRefusal). */
export const refuse = (reason: string, details?: Record<string, unknown>): EventRefusal => ({
  refused: reason,
  details,
});

export interface EventHandler {
  schema: DescMessage;
  handle(data: unknown, context: EventContext): Promise<EventRefusal | undefined>;
}

/** Declares how a service reacts to one event type. */
export function on<Desc extends DescMessage>(
  schema: Desc,
  // biome-ignore lint/suspicious/noConfusingVoidType: handlers that never refuse return nothing
  handle: (data: MessageShape<Desc>, context: EventContext) => Promise<EventRefusal | void>,
): EventHandler {
  return {
    schema,
    handle: async (data, context) =>
      (await handle(data as MessageShape<Desc>, context)) ?? undefined,
  };
}

/** What became of one delivered event at the consumer. */
export type InboxOutcome = "applied" | "duplicate" | "refused";

export interface EventSinkOptions {
  /** Where unexpected handler errors and split batches are logged. */
  logger: Logger;
  /** Where to count the events received (the service's registry); none counted without. */
  metrics?: Pick<Metrics, "inboxEvents"> | undefined;
  /**
   * How long a transaction applying several events waits for a row lock before the batch is
   * split (its events then run one by one). Two batches can lock the same rows in opposite
   * orders; Postgres would break that deadlock only after deadlock_timeout (1 s by default).
   */
  batchLockTimeoutMs?: number;
  /**
   * Event type → the service that produces it (config/subscriptions.yaml). When the caller's
   * mesh identity is known (the x-forwarded-client-cert the inbound sidecar sets), an event
   * type is accepted only from its producer's ServiceAccount in this workload's namespace.
   */
  producers?: Producers | undefined;
}

interface Applicable {
  index: number;
  event: Event;
  handler: EventHandler;
  data: unknown;
}

/**
 * The EventSinkService of a consuming service. Each event is applied once: its id goes into
 * the inbox in the same transaction as its effect, so a redelivery (the relay retrying, the
 * mesh retrying) finds it there and changes nothing.
 *
 * The events of one request are applied in one transaction (one commit for a relay's whole
 * backlog): those about one subject in order, the others alongside. If that fails, they are
 * applied one by one, each in its own transaction, so an event that cannot be applied fails
 * alone and the others still go through.
 */
export function createEventSink(
  bus: EventBus,
  handlers: EventHandler[],
  options: EventSinkOptions,
): ServiceImpl<typeof EventSinkService> {
  const { logger } = options;
  const byType = new Map(handlers.map((h) => [h.schema.typeName, h]));
  const lockTimeout = `${options.batchLockTimeoutMs ?? 200}ms`;

  /**
   * Inbox records and effects of the events, in one transaction; what became of each.
   *
   * The handlers do not wait for the inbox's answer: they assume every event is new (nearly
   * always so), and their statements follow the inbox insert in the same round trip. Should
   * some have been seen before, the transaction rolls back and the rest are applied again
   * without them (their handlers' log lines then appear twice).
   */
  const applyAll = async (events: Applicable[]): Promise<InboxOutcome[]> => {
    // Work the handlers left for after the commit; dropped with a transaction that rolls back.
    const afterCommit: (() => void)[] = [];
    let outcomes: InboxOutcome[];
    try {
      outcomes = await bus.transaction(async (tx, publish) => {
        afterCommit.length = 0;
        // One statement records them all; the ids it returns are the events not seen before.
        // With several events the lock timeout is set first.
        const recorded = Promise.all([
          events.length > 1 &&
            tx.execute(sql`select set_config('lock_timeout', ${lockTimeout}, true)`),
          tx.execute(sql`
          insert into ${inbox} (event_id, type, source)
          select event_id, type, source from jsonb_to_recordset(${JSON.stringify(
            events.map(({ event }) => ({
              event_id: event.id,
              type: event.type,
              source: event.source,
            })),
          )}::jsonb) as e(event_id uuid, type text, source text)
          on conflict do nothing
          returning event_id`),
        ]);
        // Events about one subject are applied in order; those about different subjects do not
        // depend on each other, so their handlers run at once and their statements share round
        // trips on the transaction's connection.
        const bySubject = new Map<string, Applicable[]>();
        for (const item of events) {
          const key = item.event.subject || item.event.id;
          bySubject.set(key, [...(bySubject.get(key) ?? []), item]);
        }
        const refusals = new Map<Applicable, EventRefusal>();
        const handled = Promise.allSettled(
          [...bySubject.values()].map(async (sameSubject) => {
            for (const item of sameSubject) {
              const { event, handler, data } = item;
              // Each event's log lines, timeline entries and follow-up events carry its trace.
              const context = contextOfEvent(event);
              const refusal = await runWithContext(context, () =>
                handler.handle(data, {
                  tx,
                  publish,
                  event,
                  afterCommit: (fn) => afterCommit.push(() => runWithContext(context, fn)),
                }),
              );
              if (refusal) refusals.set(item, refusal);
            }
          }),
        );
        // Awaited after the handlers; until then its failure must not go unhandled.
        recorded.catch(() => {});
        // Only once every handler has stopped using the transaction may it end.
        const handlerOutcomes = await handled;
        const [, inserted] = await recorded;
        // Postgres answers uuids in lower case; a sender may have written them in upper case.
        const fresh = new Set(
          rowsOf<{ event_id: string }>(inserted).map((row) => row.event_id.toLowerCase()),
        );
        // The same id twice in one request is applied once, too.
        const duplicates = events.map(({ event }) => !fresh.delete(event.id.toLowerCase()));
        // A duplicate's effect must not stay: undo everything (a handler may even have failed
        // because of it), then apply the others alone.
        if (duplicates.some(Boolean)) throw new DuplicatesFound(duplicates);
        const failed = handlerOutcomes.find((one) => one.status === "rejected");
        if (failed) throw failed.reason;
        if (refusals.size > 0) {
          const refused = [...refusals].map(([{ event }, refusal]) => ({
            event_id: event.id,
            reason: refusal.refused,
          }));
          // Rare, so a statement of its own: the inbox says which events changed nothing.
          await writeAtCommit(
            tx,
            sql`update ${inbox} i set outcome = 'refused', refusal = r.reason
                  from jsonb_to_recordset(${JSON.stringify(refused)}::jsonb)
                    as r(event_id uuid, reason text)
                 where i.event_id = r.event_id`,
          );
          for (const [{ event }, refusal] of refusals) {
            afterCommit.push(() => logRefusal(event, refusal));
          }
        }
        return events.map((item): InboxOutcome => (refusals.has(item) ? "refused" : "applied"));
      });
    } catch (error) {
      if (!(error instanceof DuplicatesFound)) throw error;
      const { duplicates } = error;
      const others = events.filter((_, i) => !duplicates[i]);
      const again = others.length > 0 ? await applyAll(others) : [];
      return duplicates.map((duplicate) => (duplicate ? "duplicate" : again.shift()!));
    }
    for (const fn of afterCommit) {
      try {
        fn();
      } catch (error) {
        logger.error({ err: error }, "work after an event's commit failed");
      }
    }
    return outcomes;
  };

  const logRefusal = (event: Event, refusal: EventRefusal) =>
    runWithContext(contextOfEvent(event), () =>
      logger.warn(
        {
          ...refusal.details,
          eventId: event.id,
          eventType: event.type,
          source: event.source,
          subject: event.subject,
          reason: refusal.refused,
        },
        "event refused: it contradicts what this service knows; nothing changed",
      ),
    );

  /** What the sender learns of a failed event; unexpected errors are logged, not sent. */
  function errorOf(error: unknown) {
    const connectError = toConnectError(error, logger, "shop.events.v1.EventSinkService/Deliver");
    return create(DeliveryErrorSchema, {
      code: codeToString(connectError.code),
      message: connectError.rawMessage,
    });
  }

  /** The response, the events counted by what became of them. */
  function answer(events: Event[], results: DeliveryResult[], outcomes: InboxOutcome[]) {
    results.forEach((result, i) => {
      // An error is refused too: the event was not applied.
      const outcome = result.error ? "refused" : (outcomes[i] ?? "applied");
      options.metrics?.inboxEvents.inc({ type: events[i]!.type, outcome });
    });
    return { results };
  }

  return {
    async deliver(request, context) {
      const results = request.events.map((event) =>
        create(DeliveryResultSchema, { eventId: event.id }),
      );
      const outcomes: InboxOutcome[] = [];
      const applicable: Applicable[] = [];
      const peer = peerIdentity(context.requestHeader);
      request.events.forEach((event, index) => {
        try {
          if (peer && options.producers) checkProducer(event, peer, options.producers);
          applicable.push({ index, event, ...decode(event, byType) });
        } catch (error) {
          results[index]!.error = errorOf(error);
        }
      });
      if (applicable.length > 1) {
        try {
          const applied = await applyAll(applicable);
          applicable.forEach(({ index }, i) => {
            outcomes[index] = applied[i]!;
            results[index]!.duplicate = applied[i] === "duplicate";
          });
          return answer(request.events, results, outcomes);
        } catch (error) {
          logger.info(
            { err: error, events: applicable.length },
            "cannot apply the events together; applying them one by one",
          );
        }
      }
      for (const one of applicable) {
        try {
          const [outcome] = await applyAll([one]);
          outcomes[one.index] = outcome!;
          results[one.index]!.duplicate = outcome === "duplicate";
        } catch (error) {
          results[one.index]!.error = errorOf(error);
        }
      }
      return answer(request.events, results, outcomes);
    },
  };
}

/**
 * Refuses (permission_denied) an event delivered by another mesh identity than its type's
 * producer: a forged event, whatever it says of itself. The producer's principal is its
 * ServiceAccount in this workload's own trust domain and namespace.
 */
function checkProducer(event: Event, peer: PeerIdentity, producers: Producers) {
  const producer = producers.get(event.type);
  if (!producer) {
    throw new ConnectError(
      `no producer is declared for ${event.type} events (config/subscriptions.yaml, producers)`,
      Code.PermissionDenied,
    );
  }
  const expected = peer.self?.replace(/\/sa\/[^/]+$/, `/sa/${producer}`);
  const accepted = expected ? peer.caller === expected : peer.caller.endsWith(`/sa/${producer}`);
  if (!accepted) {
    throw new ConnectError(
      `${event.type} events are accepted only from ${expected ?? `ServiceAccount ${producer}`}, not from ${peer.caller}`,
      Code.PermissionDenied,
    );
  }
}

/** The event's handler and payload, or invalid_argument: no retry will make it acceptable. */
function decode(event: Event, byType: Map<string, EventHandler>) {
  const handler = byType.get(event.type);
  if (!handler) {
    throw new ConnectError(
      `this service does not consume ${event.type} events`,
      Code.InvalidArgument,
    );
  }
  const data = event.data && anyUnpack(event.data, handler.schema);
  if (!data) {
    throw new ConnectError(
      `event.data must hold a ${event.type}, got ${event.data?.typeUrl ?? "nothing"}`,
      Code.InvalidArgument,
    );
  }
  return { handler, data };
}

/**
 * The trace of the step that published the event. A delivery of one event already runs in it
 * (the relay sent the event's trace headers): keep that context, which may hold the delivery's
 * span. So does an event published outside any trace.
 */
function contextOfEvent(event: Event) {
  const current = currentContext();
  const traceId = event.traceparent.split("-")[1];
  if (current && (!traceId || traceId === current.traceId)) return current;
  return contextOfTrace(event);
}

/** Thrown inside a delivery's transaction to roll it back: some of its events were not new. */
class DuplicatesFound extends Error {
  constructor(readonly duplicates: boolean[]) {
    super("some events were delivered before");
  }
}
