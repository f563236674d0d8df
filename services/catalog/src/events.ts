import { create } from "@bufbuild/protobuf";
import {
  OrderCancelledSchema,
  OrderConfirmedSchema,
  OrderPlacedSchema,
  StockRejectedSchema,
  StockReservedSchema,
} from "@thinmesh/contracts/shop/events/v1/saga_pb.js";
import { type EventContext, type EventHandler, type Logger, on, refuse } from "@thinmesh/platform";
import {
  commitReservation,
  releaseReservation,
  reserveStock,
  type SettleOutcome,
} from "./domain/reservations.js";
import { createReservationStore } from "./store.js";

/** The events the catalog publishes (its part of the order saga). */
export const catalogProduces = [StockReservedSchema, StockRejectedSchema];

/**
 * The catalog's part of the order saga: each handler translates the event for the domain and
 * its outcome into the follow-up event, all in the transaction that records the event in the
 * inbox. Events that change nothing (duplicates, out of order, unknown orders) are logged and
 * accepted, so the relay does not retry them; one that contradicts the contract or the order's
 * reservation is refused (recorded and logged as such by the sink).
 */
export function catalogEventHandlers(logger: Logger): EventHandler[] {
  const logOf = (orderId: string, { event }: EventContext) =>
    logger.child({ orderId, eventId: event.id, eventType: event.type });
  return [
    on(OrderPlacedSchema, async (placed, context) => {
      const log = logOf(placed.orderId, context);
      const outcome = await reserveStock(createReservationStore(context.tx), {
        orderId: placed.orderId,
        lines: placed.lines.map((line) => ({
          productId: line.productId,
          quantity: line.quantity,
        })),
      });
      switch (outcome.kind) {
        case "reserved":
          await context.publish(
            StockReservedSchema,
            create(StockReservedSchema, { orderId: placed.orderId }),
            placed.orderId,
          );
          log.info({ lines: outcome.lines }, "stock reserved");
          return;
        case "rejected":
          await context.publish(
            StockRejectedSchema,
            create(StockRejectedSchema, {
              orderId: placed.orderId,
              reason: outcome.reason,
              productIds: outcome.productIds,
            }),
            placed.orderId,
          );
          log.info({ reason: outcome.reason, productIds: outcome.productIds }, "stock rejected");
          return;
        case "unchanged":
          log.warn(
            { status: outcome.status },
            "OrderPlaced for an order that already has a reservation; nothing changed",
          );
          return;
        case "refused":
          return refuse(outcome.reason, { orderId: placed.orderId });
      }
    }),
    on(OrderConfirmedSchema, async (confirmed, context) => {
      const outcome = await commitReservation(
        createReservationStore(context.tx),
        confirmed.orderId,
      );
      logSettlement(logOf(confirmed.orderId, context), outcome);
    }),
    on(OrderCancelledSchema, async (cancelled, context) => {
      const outcome = await releaseReservation(
        createReservationStore(context.tx),
        cancelled.orderId,
      );
      logSettlement(logOf(cancelled.orderId, context).child({ reason: cancelled.reason }), outcome);
    }),
  ];
}

function logSettlement(log: Logger, outcome: SettleOutcome): void {
  switch (outcome.kind) {
    case "applied":
      log.info({ from: outcome.from, to: outcome.to, lines: outcome.lines }, "reservation settled");
      return;
    case "recorded":
      log.info(
        "nothing was reserved for the order; recorded it as released so a late OrderPlaced reserves nothing",
      );
      return;
    case "ignored":
      log[outcome.level]({ status: outcome.status ?? "none" }, `${outcome.note}; nothing changed`);
      return;
  }
}
