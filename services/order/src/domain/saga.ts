import { formatMoney, sameMoney } from "./money.js";
import type { Money, OrderHead, OrderStatus, TimelineEntry } from "./order.js";

/** What the other services tell the order saga (design.md, section 3). */
export type SagaEvent =
  | { kind: "stock_reserved"; orderId: string }
  | { kind: "stock_rejected"; orderId: string; reason: string; productIds: string[] }
  | { kind: "payment_captured"; orderId: string; paymentId: string; amount: Money | undefined }
  | { kind: "payment_declined"; orderId: string; paymentId: string; reason: string };

export type SagaEventKind = SagaEvent["kind"];

export interface SagaTransition {
  from: OrderStatus;
  to: OrderStatus;
  /** The timeline's name for the step. */
  step: string;
}

/**
 * The saga's state machine: each event moves an order from exactly one status to the next.
 * CONFIRMED and CANCELLED are final.
 */
export const sagaTransitions: Readonly<Record<SagaEventKind, SagaTransition>> = {
  stock_reserved: { from: "PENDING", to: "AWAITING_PAYMENT", step: "stock reserved" },
  stock_rejected: { from: "PENDING", to: "CANCELLED", step: "stock rejected" },
  payment_captured: { from: "AWAITING_PAYMENT", to: "CONFIRMED", step: "payment captured" },
  payment_declined: { from: "AWAITING_PAYMENT", to: "CANCELLED", step: "payment declined" },
};

export type TransitionCheck =
  | { allowed: true; transition: SagaTransition }
  | { allowed: false; reason: string };

/** Whether an event fits an order in the given status. */
export function transitionFor(status: OrderStatus, kind: SagaEventKind): TransitionCheck {
  const transition = sagaTransitions[kind];
  if (status === transition.from) return { allowed: true, transition };
  return {
    allowed: false,
    reason: `${transition.step} applies to orders in ${transition.from}, but this one is ${status} (a duplicate or out-of-order event)`,
  };
}

/** The event the order publishes after a step, if any (the next service's cue). */
export type FollowUp =
  | {
      kind: "payment_requested";
      orderId: string;
      userId: string;
      amount: Money;
      paymentToken: string;
    }
  | { kind: "order_confirmed"; orderId: string }
  | { kind: "order_cancelled"; orderId: string; reason: string };

export function followUpOf(event: SagaEvent, order: OrderHead): FollowUp | undefined {
  switch (event.kind) {
    case "stock_reserved":
      return {
        kind: "payment_requested",
        orderId: order.id,
        userId: order.userId,
        amount: order.total,
        paymentToken: order.paymentToken,
      };
    case "payment_captured":
      return { kind: "order_confirmed", orderId: order.id };
    case "payment_declined":
      // The catalog releases the reservation on OrderCancelled (the compensation).
      return { kind: "order_cancelled", orderId: order.id, reason: order.cancelReason };
    case "stock_rejected":
      // Nothing was reserved, so there is nothing to release.
      return undefined;
  }
}

/** Why a cancelled order was cancelled, as its owner reads it. */
export function cancelReasonOf(event: SagaEvent): string | undefined {
  switch (event.kind) {
    case "stock_rejected":
      return `stock could not be reserved: ${event.reason || "no reason given"}`;
    case "payment_declined":
      return `payment declined: ${event.reason || "no reason given"}`;
    default:
      return undefined;
  }
}

/** The timeline's detail for a step. */
export function detailOf(event: SagaEvent, total: Money): string {
  switch (event.kind) {
    case "stock_reserved":
      return "every item is reserved";
    case "stock_rejected":
      return event.productIds.length
        ? `${event.reason} (products ${event.productIds.join(", ")})`
        : event.reason;
    case "payment_captured":
      // Only a capture of exactly the total gets here (see applySagaEvent).
      return `payment ${event.paymentId} captured ${formatMoney(event.amount ?? total)}`;
    case "payment_declined":
      return `payment ${event.paymentId} declined: ${event.reason}`;
  }
}

/**
 * Persistence the saga needs, bound to the transaction of the event being handled (so the
 * inbox record, the change and the follow-up event commit together).
 */
export interface SagaStore {
  /** The order's own fields (no items, no timeline), or undefined if there is none. */
  head(orderId: string): Promise<OrderHead | undefined>;
  /**
   * Moves the order to transition.to only if it is in transition.from and, when `total` is
   * given, its total is exactly that (a conditional update). Resolves to the order after the
   * change, or undefined when there is no such order or it did not match, and nothing changed.
   */
  advance(
    orderId: string,
    transition: SagaTransition,
    cancelReason: string | undefined,
    total?: Money,
  ): Promise<OrderHead | undefined>;
  appendTimeline(orderId: string, entry: Omit<TimelineEntry, "time">): Promise<void>;
  publish(followUp: FollowUp): Promise<void>;
}

export type SagaOutcome =
  | { applied: true; from: OrderStatus; to: OrderStatus; followUp: FollowUp | undefined }
  | { applied: false; reason: string };

/**
 * Applies one saga event: a guarded state transition, its timeline entry and the follow-up
 * event. The saga believes nothing that contradicts the order: an event for an unknown order,
 * one that does not fit the order's status, or a capture of anything but exactly the order's
 * total changes nothing, whoever sent it; the outcome says why (the event is then refused).
 */
export async function applySagaEvent(
  store: SagaStore,
  event: SagaEvent,
  traceId: string,
): Promise<SagaOutcome> {
  const contradiction = contradictionIn(event);
  if (contradiction) return { applied: false, reason: contradiction };
  const transition = sagaTransitions[event.kind];
  const total = event.kind === "payment_captured" ? event.amount : undefined;
  // The guarded update decides (of two events racing for one order, one moves it; a capture
  // of another amount moves none); the order is read only to explain an event that changed
  // nothing.
  const order = await store.advance(event.orderId, transition, cancelReasonOf(event), total);
  if (!order) return { applied: false, reason: await whyNot(store, event) };
  const followUp = followUpOf(event, order);
  // Independent writes: the store may send them together.
  await Promise.all([
    store.appendTimeline(order.id, {
      step: transition.step,
      status: transition.to,
      traceId,
      detail: detailOf(event, order.total),
    }),
    followUp && store.publish(followUp),
  ]);
  return { applied: true, from: transition.from, to: transition.to, followUp };
}

/** What makes the event unbelievable whatever the order's state, if anything. */
function contradictionIn(event: SagaEvent): string | undefined {
  switch (event.kind) {
    case "payment_captured":
      if (!event.paymentId) return "a PaymentCaptured must name the payment";
      if (!event.amount) return "a PaymentCaptured must say how much was captured";
      return undefined;
    case "payment_declined":
      return event.paymentId ? undefined : "a PaymentDeclined must name the payment";
    default:
      return undefined;
  }
}

async function whyNot(store: SagaStore, event: SagaEvent): Promise<string> {
  const current = await store.head(event.orderId);
  if (!current) return `there is no order ${event.orderId}`;
  const check = transitionFor(current.status, event.kind);
  if (!check.allowed) return check.reason;
  if (
    event.kind === "payment_captured" &&
    event.amount &&
    !sameMoney(event.amount, current.total)
  ) {
    return `payment ${event.paymentId} captured ${formatMoney(event.amount)}, but the order total is ${formatMoney(current.total)}: only a capture of the total confirms the order`;
  }
  // Statuses only move forward, so this means another event moved the order just now.
  return `the order left ${check.transition.from} while this was applied`;
}
