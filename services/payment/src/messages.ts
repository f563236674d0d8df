import { create } from "@bufbuild/protobuf";
import {
  PaymentCapturedSchema,
  PaymentDeclinedSchema,
} from "@thinmesh/contracts/shop/events/v1/saga_pb.js";
import type { Publish } from "@thinmesh/platform";
import type { NewPayment } from "./domain/payment.js";

/** The events payment publishes, for deps.eventBus. */
export const producedEvents = [PaymentCapturedSchema, PaymentDeclinedSchema];

/** Tells the order service how its payment went: PaymentCaptured or PaymentDeclined. */
export async function publishOutcome(publish: Publish, payment: NewPayment): Promise<void> {
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
  }
}
