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
  /** The order already has this reservation (OrderPlaced again under another event id). */
  | { kind: "unchanged"; status: ReservationStatus }
  /**
   * The event contradicts the contract or what the catalog knows of the order (other lines
   * than its reservation's); nothing was written.
   */
  | { kind: "refused"; reason: string };

/** The contract's limits on an order (order.proto's validation rules for PlaceOrder). */
export const orderLimits = { maxLines: 50, maxQuantity: 100 } as const;

/**
 * Reserves stock for every line of a placed order, or for none. Runs inside the caller's
 * transaction: the order's reservation row is claimed first (so two deliveries for one order
 * take turns), then the products are locked in id order and checked, and only if every line
 * fits are the units taken. A rejection takes no stock and leaves the order's reservation
 * released and empty, so that the order id can reserve nothing later.
 *
 * One reservation per order: an OrderPlaced for an order that has one changes nothing, and is
 * refused if its lines differ. So is one whose lines break the contract's limits (no order
 * the order service accepted has them).
 */
export async function reserveStock(
  store: ReservationStore,
  order: PlacedOrder,
): Promise<ReserveOutcome> {
  checkOrderId(order.orderId);
  const breach = contractBreachIn(order.lines);
  if (breach) return { kind: "refused", reason: breach };
  // Sent together, run in this order: the reservation row first, then the products. Should
  // the order have a reservation already, the products stay locked to no purpose until the
  // transaction ends; that is rare and harmless.
  const [claimed, stock] = await Promise.all([
    store.insertIfAbsent(order.orderId, "reserved"),
    store.lockProducts(productIdsToLock(order.lines)),
  ]);
  if (!claimed) {
    const existing = await store.lockReservation(order.orderId);
    // The row was there a moment ago and reservations are never deleted.
    if (!existing) throw new Error(`the reservation of order ${order.orderId} vanished`);
    // Released with no lines: the order was rejected or cancelled before; it stays so.
    if (existing.lines.length > 0 && !sameLines(existing.lines, order.lines)) {
      return {
        kind: "refused",
        reason: `order ${order.orderId} already has a reservation (${existing.status}) of other lines: ${describeLines(existing.lines)}; this event asks for ${describeLines(order.lines)}`,
      };
    }
    return { kind: "unchanged", status: existing.status };
  }
  const decision = decideReservation(order.lines, stock);
  if (!decision.reserve) {
    await store.setStatus(order.orderId, "released");
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

/** Why the lines break the contract's limits, if they do. */
export function contractBreachIn(lines: readonly ReservationLine[]): string | undefined {
  if (lines.length === 0 || lines.length > orderLimits.maxLines) {
    return `an order has 1 to ${orderLimits.maxLines} lines, this one ${lines.length}`;
  }
  const bad = lines.find(
    (line) =>
      !Number.isInteger(line.quantity) ||
      line.quantity < 1 ||
      line.quantity > orderLimits.maxQuantity,
  );
  if (bad) {
    return `a line's quantity is 1 to ${orderLimits.maxQuantity}, got ${bad.quantity} for product ${bad.productId}`;
  }
  return undefined;
}

/** The lines as a reservation records them: one per product (lower case), in id order. */
function normalised(lines: readonly ReservationLine[]): ReservationLine[] {
  const byProduct = new Map<string, number>();
  for (const { productId, quantity } of lines) {
    const id = productId.toLowerCase();
    byProduct.set(id, (byProduct.get(id) ?? 0) + quantity);
  }
  return [...byProduct]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([productId, quantity]) => ({ productId, quantity }));
}

function sameLines(a: readonly ReservationLine[], b: readonly ReservationLine[]): boolean {
  const [x, y] = [normalised(a), normalised(b)];
  return (
    x.length === y.length &&
    x.every((line, i) => line.productId === y[i]!.productId && line.quantity === y[i]!.quantity)
  );
}

const describeLines = (lines: readonly ReservationLine[]) =>
  normalised(lines)
    .map((line) => `${line.quantity} × ${line.productId}`)
    .join(", ");

function checkOrderId(orderId: string): void {
  if (!orderId) throw invalidArgument("order_id must not be empty");
}
