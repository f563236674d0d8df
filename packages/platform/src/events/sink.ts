import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import { anyUnpack } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import type { Event, EventSinkService } from "@thinmesh/contracts/shop/events/v1/events_pb.js";
import { invalidArgument } from "../errors.js";
import type { AnyExecutor, EventBus, Publish } from "./bus.js";
import { inbox } from "./schema.js";

export interface EventContext {
  /** The transaction the effect must use; the inbox record commits with it. */
  tx: AnyExecutor;
  /** Publishes follow-up events in the same transaction. */
  publish: Publish;
  event: Event;
}

export interface EventHandler {
  schema: DescMessage;
  handle(data: unknown, context: EventContext): Promise<void>;
}

/** Declares how a service reacts to one event type. */
export function on<Desc extends DescMessage>(
  schema: Desc,
  handle: (data: MessageShape<Desc>, context: EventContext) => Promise<void>,
): EventHandler {
  return { schema, handle: handle as EventHandler["handle"] };
}

/**
 * The EventSinkService of a consuming service. Each event is applied once: its id goes into
 * the inbox in the same transaction as its effect, so a redelivery (the relay retrying, the
 * mesh retrying) finds it there and changes nothing.
 */
export function createEventSink(
  bus: EventBus,
  handlers: EventHandler[],
): ServiceImpl<typeof EventSinkService> {
  const byType = new Map(handlers.map((h) => [h.schema.typeName, h]));
  return {
    async deliver(request) {
      const event = request.event!;
      const handler = byType.get(event.type);
      if (!handler) throw invalidArgument(`this service does not consume ${event.type} events`);
      const data = event.data && anyUnpack(event.data, handler.schema);
      if (!data) {
        throw invalidArgument(
          `event.data must hold a ${event.type}, got ${event.data?.typeUrl ?? "nothing"}`,
        );
      }
      const duplicate = await bus.transaction(async (tx, publish) => {
        const recorded = await tx
          .insert(inbox)
          .values({ eventId: event.id, type: event.type, source: event.source })
          .onConflictDoNothing()
          .returning({ eventId: inbox.eventId });
        if (recorded.length === 0) return true;
        await handler.handle(data, { tx, publish, event });
        return false;
      });
      return { duplicate };
    },
  };
}
