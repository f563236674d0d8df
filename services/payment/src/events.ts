import { create } from "@bufbuild/protobuf";
import {
  PaymentCapturedSchema,
  PaymentDeclinedSchema,
  PaymentRequestedSchema,
} from "@thinmesh/contracts/shop/events/v1/saga_pb.js";
import { type EventHandler, type Logger, on } from "@thinmesh/platform";
import { handlePaymentRequest } from "./domain/payments.js";
import type { PaymentProvider } from "./domain/provider.js";
import { createPaymentStore } from "./store.js";

/** The events payment publishes, for deps.eventBus. */
export const producedEvents = [PaymentCapturedSchema, PaymentDeclinedSchema];

/**
 * PaymentRequested → charge the order once, then tell the order service how it went. Runs in
 * the event sink's transaction: the payment, its ledger, the inbox record and the outgoing
 * event commit together or not at all.
 */
export function onPaymentRequested(provider: PaymentProvider, logger: Logger): EventHandler {
  return on(PaymentRequestedSchema, async (requested, { tx, publish, event }) => {
    const outcome = await handlePaymentRequest(createPaymentStore(tx), provider, {
      orderId: requested.orderId,
      userId: requested.userId,
      amount: requested.amount && {
        currencyCode: requested.amount.currencyCode,
        amountMinor: requested.amount.amountMinor,
      },
      paymentToken: requested.paymentToken,
    });
    const log = logger.child({ orderId: requested.orderId, eventId: event.id });
    if (!outcome.recorded) {
      log.info("the order already has a payment; nothing to do");
      return;
    }
    const { payment } = outcome;
    if (payment.status === "CAPTURED") {
      await publish(
        PaymentCapturedSchema,
        create(PaymentCapturedSchema, {
          orderId: payment.orderId,
          paymentId: payment.id,
          amount: payment.amount,
        }),
        payment.orderId,
      );
      log.info({ paymentId: payment.id }, "payment captured");
    } else {
      await publish(
        PaymentDeclinedSchema,
        create(PaymentDeclinedSchema, {
          orderId: payment.orderId,
          paymentId: payment.id,
          reason: payment.declineReason ?? "",
        }),
        payment.orderId,
      );
      log.info({ paymentId: payment.id, reason: payment.declineReason }, "payment declined");
    }
  });
}
