import {
  PaymentCapturedSchema,
  PaymentDeclinedSchema,
  StockRejectedSchema,
  StockReservedSchema,
} from "@thinmesh/contracts/shop/events/v1/saga_pb.js";
import {
  currentContext,
  type EventContext,
  type EventHandler,
  type Logger,
  on,
  refuse,
} from "@thinmesh/platform";
import { applySagaEvent, type SagaEvent } from "./domain/saga.js";
import { moneyOf } from "./messages.js";
import { createSagaStore } from "./store.js";

/**
 * The saga's reactions to the catalog's and payment's events. The platform's event sink
 * runs each in one transaction with its inbox record, so a redelivered event changes nothing.
 */
export function sagaHandlers(logger: Logger): EventHandler[] {
  const apply = async (event: SagaEvent, context: EventContext) => {
    // The envelope's subject names the order too; an event that names two orders is believed
    // for neither.
    const { subject } = context.event;
    if (subject && subject.toLowerCase() !== event.orderId.toLowerCase()) {
      return refuse(`the event is about order ${subject} but its data names ${event.orderId}`, {
        orderId: event.orderId,
      });
    }
    // The trace of the delivery: the relay carries the trace of the step that caused it.
    const traceId = currentContext()?.traceId ?? "";
    const outcome = await applySagaEvent(
      createSagaStore(context.tx, context.publish),
      event,
      traceId,
    );
    if (!outcome.applied) {
      // Recorded and logged by the sink as refused; the sender is not asked to retry, as the
      // answer would be the same.
      return refuse(outcome.reason, { orderId: event.orderId });
    }
    logger.info(
      {
        orderId: event.orderId,
        eventId: context.event.id,
        eventType: context.event.type,
        from: outcome.from,
        to: outcome.to,
        followUp: outcome.followUp?.kind,
      },
      "saga step applied",
    );
    return undefined;
  };
  // The payload names the order; an empty one falls back to the envelope's subject.
  const orderIdOf = (data: { orderId: string }, context: EventContext) =>
    data.orderId || context.event.subject;

  return [
    on(StockReservedSchema, (data, context) =>
      apply({ kind: "stock_reserved", orderId: orderIdOf(data, context) }, context),
    ),
    on(StockRejectedSchema, (data, context) =>
      apply(
        {
          kind: "stock_rejected",
          orderId: orderIdOf(data, context),
          reason: data.reason,
          productIds: data.productIds,
        },
        context,
      ),
    ),
    on(PaymentCapturedSchema, (data, context) =>
      apply(
        {
          kind: "payment_captured",
          orderId: orderIdOf(data, context),
          paymentId: data.paymentId,
          amount: data.amount && moneyOf(data.amount),
        },
        context,
      ),
    ),
    on(PaymentDeclinedSchema, (data, context) =>
      apply(
        {
          kind: "payment_declined",
          orderId: orderIdOf(data, context),
          paymentId: data.paymentId,
          reason: data.reason,
        },
        context,
      ),
    ),
  ];
}
