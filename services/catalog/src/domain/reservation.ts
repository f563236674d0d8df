import { isUuid } from "./product.js";

/**
 * The stock an order holds (the order saga): taken out of stock_available when the order is
 * placed (reserved), then either kept when the order is confirmed (committed) or given back
 * when it is cancelled (released).
 */
export type ReservationStatus = "reserved" | "committed" | "released";

export interface ReservationLine {
  productId: string;
  quantity: number;
}

export interface Reservation {
  orderId: string;
  status: ReservationStatus;
  /** One line per product, in product id order. */
  lines: ReservationLine[];
  createdAt: Date;
  updatedAt: Date;
}

/** A product's stock as read (and locked) for a reservation decision. */
export interface StockOnHand {
  id: string;
  sku: string;
  stockAvailable: number;
}

/** Reserved and committed units of one product, next to what is still available. */
export interface ReservationTotal {
  productId: string;
  sku: string;
  stockAvailable: number;
  /** Units held by reservations waiting for their order to be confirmed or cancelled. */
  reserved: number;
  /** Units sold to confirmed orders. */
  committed: number;
}

/**
 * Persistence for reservations. Every method runs in the caller's transaction (the event
 * handler's, with the inbox record and the follow-up event); the database's constraints
 * (stock_available >= 0, one reservation per order, quantity > 0) back the rules here.
 */
export interface ReservationStore {
  /**
   * Creates the order's reservation with no lines unless it has one; false when it had. A
   * concurrent creation for the same order is waited for, so one transaction at a time owns
   * an order.
   */
  insertIfAbsent(orderId: string, status: ReservationStatus): Promise<boolean>;
  /** The order's reservation, locked until the transaction ends; undefined when none. */
  lockReservation(orderId: string): Promise<Reservation | undefined>;
  /**
   * The products with these ids (lower-case UUIDs, sorted), locked FOR UPDATE in that order so
   * that transactions reserving overlapping products cannot deadlock. Unknown ids are absent.
   */
  lockProducts(ids: string[]): Promise<StockOnHand[]>;
  /** Moves the lines' units out of stock_available and records them as the order's lines. */
  takeStock(orderId: string, lines: ReservationLine[]): Promise<void>;
  /** Adds the lines' units back to stock_available. */
  returnStock(lines: ReservationLine[]): Promise<void>;
  setStatus(orderId: string, status: ReservationStatus): Promise<void>;
}

export type ReservationDecision =
  | { reserve: true; lines: ReservationLine[] }
  | { reserve: false; reason: string; productIds: string[] };

/**
 * The products to lock for an order's lines: their ids in lower case (as the database answers
 * them), without duplicates, sorted (the lock order), and only those that can be product ids.
 */
export function productIdsToLock(lines: readonly ReservationLine[]): string[] {
  const ids = new Set(lines.map((line) => line.productId.toLowerCase()).filter((id) => isUuid(id)));
  return [...ids].sort();
}

/**
 * Whether an order's lines can be reserved, all of them or none: every product must exist and
 * have enough units available for all the order's lines for it together. A rejection names
 * every product that fails, with ids as the order gave them.
 */
export function decideReservation(
  lines: readonly ReservationLine[],
  stock: readonly StockOnHand[],
): ReservationDecision {
  if (lines.length === 0) {
    return { reserve: false, reason: "the order has no lines", productIds: [] };
  }
  // Lines for the same product are reserved together.
  const wanted = new Map<string, { given: string; quantity: number }>();
  const problems: string[] = [];
  const rejected: string[] = [];
  const reject = (productId: string, problem: string) => {
    if (!rejected.includes(productId)) rejected.push(productId);
    problems.push(problem);
  };
  for (const line of lines) {
    if (!Number.isInteger(line.quantity) || line.quantity <= 0) {
      reject(line.productId, `invalid quantity ${line.quantity} for product ${line.productId}`);
      continue;
    }
    const key = line.productId.toLowerCase();
    const entry = wanted.get(key);
    if (entry) entry.quantity += line.quantity;
    else wanted.set(key, { given: line.productId, quantity: line.quantity });
  }
  const byId = new Map(stock.map((product) => [product.id.toLowerCase(), product]));
  const reserved: ReservationLine[] = [];
  for (const [id, { given, quantity }] of wanted) {
    const product = isUuid(id) ? byId.get(id) : undefined;
    if (!product) {
      reject(given, `unknown product ${given}`);
    } else if (product.stockAvailable < quantity) {
      reject(
        given,
        `not enough stock for ${product.sku} (wanted ${quantity}, ${product.stockAvailable} available)`,
      );
    } else {
      reserved.push({ productId: id, quantity });
    }
  }
  if (problems.length > 0) {
    return { reserve: false, reason: problems.join("; "), productIds: rejected };
  }
  reserved.sort((a, b) => (a.productId < b.productId ? -1 : a.productId > b.productId ? 1 : 0));
  return { reserve: true, lines: reserved };
}

/** How an order's saga settles its reservation. */
export type Settlement = "commit" | "release";

export type SettlementDecision =
  | { apply: true; to: ReservationStatus; returnStock: boolean }
  | {
      apply: false;
      /** How loudly to log it: a duplicate is routine, a contradiction needs a person. */
      level: "info" | "warn" | "error";
      note: string;
    };

/**
 * The state machine of a reservation: reserved → committed (OrderConfirmed) or released
 * (OrderCancelled, giving the units back). Anything else changes nothing: a duplicate, an
 * event out of order, an order the catalog never reserved for.
 */
export function decideSettlement(
  current: ReservationStatus | undefined,
  settlement: Settlement,
): SettlementDecision {
  if (settlement === "commit") {
    switch (current) {
      case "reserved":
        return { apply: true, to: "committed", returnStock: false };
      case "committed":
        return { apply: false, level: "info", note: "the reservation is already committed" };
      case "released":
        return {
          apply: false,
          level: "error",
          note: "the order was confirmed but its reservation was released: the units went back on sale and need reconciling",
        };
      case undefined:
        return {
          apply: false,
          level: "warn",
          note: "no reservation to commit (an unknown order, or OrderConfirmed before OrderPlaced)",
        };
    }
  }
  switch (current) {
    case "reserved":
      return { apply: true, to: "released", returnStock: true };
    case "released":
      return { apply: false, level: "info", note: "the reservation is already released" };
    case "committed":
      return {
        apply: false,
        level: "error",
        note: "the order was cancelled after its reservation was committed: the units stay sold; this needs a refund and restock process",
      };
    case undefined:
      return { apply: false, level: "info", note: "no reservation to release" };
  }
}
