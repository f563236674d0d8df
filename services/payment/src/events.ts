import { PaymentRequestedSchema } from "@thinmesh/contracts/shop/events/v1/saga_pb.js";
import { currentContext, type EventHandler, type Logger, on, refuse } from "@thinmesh/platform";
import type { Charger } from "./charger.js";
import { recordPaymentRequest } from "./domain/payments.js";
import { createPaymentStore } from "./store.js";

export { producedEvents } from "./messages.js";

/**
 * PaymentRequested → record the order's charge (PENDING) with the inbox record, and charge it
 * once that has committed: the provider is never called inside a transaction, and a batch
 * replayed or an event delivered again does not call it again. The charger then records the
 * outcome and its event (PaymentCaptured or PaymentDeclined) in a transaction of its own.
 */
export function onPaymentRequested(charger: Charger, logger: Logger): EventHandler {
  return on(PaymentRequestedSchema, async (requested, { tx, event, afterCommit }) => {
    const log = logger.child({ orderId: requested.orderId, eventId: event.id });
    if (event.subject && event.subject.toLowerCase() !== requested.orderId.toLowerCase()) {
      return refuse(
        `the event is about order ${event.subject} but its data names ${requested.orderId}`,
        { orderId: requested.orderId },
      );
    }
    const context = currentContext();
    const outcome = await recordPaymentRequest(
      createPaymentStore(tx),
      {
        orderId: requested.orderId,
        userId: requested.userId,
        amount: requested.amount && {
          currencyCode: requested.amount.currencyCode,
          amountMinor: requested.amount.amountMinor,
        },
        paymentToken: requested.paymentToken,
      },
      {
        leaseMs: charger.leaseMs,
        trace: {
          traceparent: context?.propagation.traceparent ?? event.traceparent,
          tracestate: context?.propagation.tracestate ?? event.tracestate,
        },
      },
    );
    switch (outcome.kind) {
      case "recorded":
        afterCommit(() => charger.submit(outcome.charge));
        log.info({ paymentId: outcome.charge.id }, "payment requested; charging it");
        return;
      case "repeated":
        log.info(
          { status: outcome.status },
          "the order's payment was requested before; nothing to do",
        );
        return;
      case "refused":
        return refuse(outcome.reason, { orderId: requested.orderId });
    }
  });
}
