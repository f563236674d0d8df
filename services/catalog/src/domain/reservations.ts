import { invalidArgument } from "@thinmesh/platform";
import {
  decideReservation,
  decideSettlement,
  productIdsToLock,
  type ReservationLine,
  type ReservationStatus,
  type ReservationStore,
  type Settlement,
} from "./reservation.js";

export interface PlacedOrder {
  orderId: string;
  lines: ReservationLine[];
}

export type ReserveOutcome =
  | { kind: "reserved"; lines: ReservationLine[] }
  | { kind: "rejected"; reason: string; productIds: string[] }
  /** The order already has a reservation (OrderPlaced again under another event id). */
  | { kind: "unchanged"; status: ReservationStatus };

/**
 * Reserves stock for every line of a placed order, or for none. Runs inside the caller's
 * transaction: the order's reservation row is claimed first (so two deliveries for one order
 * take turns), then the products are locked in id order and checked, and only if every line
 * fits are the units taken. A rejection leaves nothing behind.
 */
export async function reserveStock(
  store: ReservationStore,
  order: PlacedOrder,
): Promise<ReserveOutcome> {
  checkOrderId(order.orderId);
  // Sent together, run in this order: the reservation row first, then the products. Should
  // the order have a reservation already, the products stay locked to no purpose until the
  // transaction ends; that is rare and harmless.
  const [claimed, stock] = await Promise.all([
    store.insertIfAbsent(order.orderId, "reserved"),
    store.lockProducts(productIdsToLock(order.lines)),
  ]);
  if (!claimed) {
    const existing = await store.lockReservation(order.orderId);
    // The row was there a moment ago and reservations are deleted only by the transaction
    // that created them, which has committed.
    if (!existing) throw new Error(`the reservation of order ${order.orderId} vanished`);
    return { kind: "unchanged", status: existing.status };
  }
  const decision = decideReservation(order.lines, stock);
  if (!decision.reserve) {
    await store.deleteReservation(order.orderId);
    return { kind: "rejected", reason: decision.reason, productIds: decision.productIds };
  }
  await store.takeStock(order.orderId, decision.lines);
  return { kind: "reserved", lines: decision.lines };
}

export type SettleOutcome =
  | { kind: "applied"; from: ReservationStatus; to: ReservationStatus; lines: ReservationLine[] }
  | {
      kind: "ignored";
      status: ReservationStatus | undefined;
      level: "info" | "warn" | "error";
      note: string;
    }
  /** Nothing was reserved for the order; it is recorded as released (see releaseReservation). */
  | { kind: "recorded"; status: ReservationStatus };

/** OrderConfirmed: the reserved units stay sold. */
export async function commitReservation(
  store: ReservationStore,
  orderId: string,
): Promise<SettleOutcome> {
  checkOrderId(orderId);
  return settle(store, orderId, "commit");
}

/**
 * OrderCancelled: the reserved units go back on sale. When the order has no reservation (its
 * stock was rejected, or the cancellation overtook OrderPlaced), an empty released one is
 * recorded so that an OrderPlaced arriving later reserves nothing for a cancelled order.
 */
export async function releaseReservation(
  store: ReservationStore,
  orderId: string,
): Promise<SettleOutcome> {
  checkOrderId(orderId);
  if (await store.insertIfAbsent(orderId, "released")) {
    return { kind: "recorded", status: "released" };
  }
  return settle(store, orderId, "release");
}

async function settle(
  store: ReservationStore,
  orderId: string,
  settlement: Settlement,
): Promise<SettleOutcome> {
  const reservation = await store.lockReservation(orderId);
  const decision = decideSettlement(reservation?.status, settlement);
  if (!decision.apply) {
    return {
      kind: "ignored",
      status: reservation?.status,
      level: decision.level,
      note: decision.note,
    };
  }
  // Only an existing reservation changes state.
  if (!reservation) throw new Error(`no reservation of order ${orderId} to ${settlement}`);
  if (decision.returnStock) await store.returnStock(reservation.lines);
  await store.setStatus(orderId, decision.to);
  return {
    kind: "applied",
    from: reservation.status,
    to: decision.to,
    lines: reservation.lines,
  };
}

function checkOrderId(orderId: string): void {
  if (!orderId) throw invalidArgument("order_id must not be empty");
}
