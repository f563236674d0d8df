// Translations between the domain's orders and the contracts' messages (RPC responses and
// saga events), kept in one place so neither side leaks into the other.
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  OrderCancelledSchema,
  OrderConfirmedSchema,
  type OrderPlaced,
  OrderPlacedSchema,
  PaymentRequestedSchema,
} from "@thinmesh/contracts/shop/events/v1/saga_pb.js";
import {
  type OrderSchema,
  OrderStatus as OrderStatusMessage,
} from "@thinmesh/contracts/shop/order/v1/order_pb.js";
import type { Publish } from "@thinmesh/platform";
import type { Money, NewOrder, Order, OrderStatus } from "./domain/order.js";
import type { FollowUp } from "./domain/saga.js";

const statusMessage: Record<OrderStatus, OrderStatusMessage> = {
  PENDING: OrderStatusMessage.PENDING,
  AWAITING_PAYMENT: OrderStatusMessage.AWAITING_PAYMENT,
  CONFIRMED: OrderStatusMessage.CONFIRMED,
  CANCELLED: OrderStatusMessage.CANCELLED,
};

export const moneyMessage = (money: Money) => ({
  currencyCode: money.currencyCode,
  amountMinor: money.amountMinor,
});

export function orderMessage(order: Order): MessageInitShape<typeof OrderSchema> {
  return {
    id: order.id,
    userId: order.userId,
    status: statusMessage[order.status],
    items: order.items.map((item) => ({
      productId: item.productId,
      sku: item.sku,
      name: item.name,
      quantity: item.quantity,
      unitPrice: moneyMessage(item.unitPrice),
      lineTotal: moneyMessage(item.lineTotal),
    })),
    total: moneyMessage(order.total),
    cancelReason: order.cancelReason,
    traceId: order.traceId,
    timeline: order.timeline.map((entry) => ({
      step: entry.step,
      status: statusMessage[entry.status],
      time: timestampFromDate(entry.time),
      traceId: entry.traceId,
      detail: entry.detail,
    })),
    createTime: timestampFromDate(order.createdAt),
    updateTime: timestampFromDate(order.updatedAt),
  };
}

/** OrderPlaced: the catalog's cue to reserve every line. */
export function orderPlacedEvent(order: NewOrder): OrderPlaced {
  return create(OrderPlacedSchema, {
    orderId: order.id,
    userId: order.userId,
    lines: order.items.map((item) => ({ productId: item.productId, quantity: item.quantity })),
    total: moneyMessage(order.total),
  });
}

/** Publishes the event a saga step calls for, in the step's transaction. */
export async function publishFollowUp(publish: Publish, followUp: FollowUp): Promise<void> {
  const subject = followUp.orderId;
  switch (followUp.kind) {
    case "payment_requested":
      await publish(
        PaymentRequestedSchema,
        create(PaymentRequestedSchema, {
          orderId: followUp.orderId,
          userId: followUp.userId,
          amount: moneyMessage(followUp.amount),
          paymentToken: followUp.paymentToken,
        }),
        subject,
      );
      return;
    case "order_confirmed":
      await publish(
        OrderConfirmedSchema,
        create(OrderConfirmedSchema, { orderId: followUp.orderId }),
        subject,
      );
      return;
    case "order_cancelled":
      await publish(
        OrderCancelledSchema,
        create(OrderCancelledSchema, { orderId: followUp.orderId, reason: followUp.reason }),
        subject,
      );
      return;
  }
}

/** Every event type the order service publishes (its outbox refuses any other). */
export const producedEvents = [
  OrderPlacedSchema,
  PaymentRequestedSchema,
  OrderConfirmedSchema,
  OrderCancelledSchema,
] as const;

export const moneyOf = (money: { currencyCode: string; amountMinor: bigint }): Money => ({
  currencyCode: money.currencyCode,
  amountMinor: money.amountMinor,
});
