import type { Money } from "@thinmesh/platform";

export type { Money };

export const orderStatuses = ["PENDING", "AWAITING_PAYMENT", "CONFIRMED", "CANCELLED"] as const;
export type OrderStatus = (typeof orderStatuses)[number];

/** One line of an order as priced when it was placed. */
export interface OrderItem {
  productId: string;
  sku: string;
  name: string;
  quantity: number;
  unitPrice: Money;
  lineTotal: Money;
}

/** One step of the saga: what happened, the status it left, when, and in which trace. */
export interface TimelineEntry {
  step: string;
  status: OrderStatus;
  time: Date;
  traceId: string;
  detail: string;
}

/** An order's own fields, without its items and timeline (what the saga works on). */
export interface OrderHead {
  id: string;
  userId: string;
  status: OrderStatus;
  total: Money;
  /** Empty unless the order was cancelled. */
  cancelReason: string;
  /** The trace id of the PlaceOrder call. */
  traceId: string;
  /** The provider's payment method token, passed on in PaymentRequested; never shown. */
  paymentToken: string;
  createdAt: Date;
  updatedAt: Date;
}

/** An order as its owner sees it. */
export interface Order extends Omit<OrderHead, "paymentToken"> {
  items: OrderItem[];
  timeline: TimelineEntry[];
}

/** A new order, priced and ready to be stored together with its first timeline entry. */
export interface NewOrder {
  id: string;
  userId: string;
  idempotencyKey: string;
  requestFingerprint: string;
  items: OrderItem[];
  total: Money;
  paymentToken: string;
  traceId: string;
  /** The "order placed" entry. */
  placed: Omit<TimelineEntry, "time">;
}

/** An order found by its idempotency key, with what tells a retry from a different request. */
export interface KeyedOrder {
  order: Order;
  requestFingerprint: string;
}

/** Whose orders a listing covers: one user's, or (for an admin) everyone's. */
export type OrderScope = { userId: string } | "all";

/** Where a page of ListOrders continues: after this order, newest first. */
export interface OrderCursor {
  createdAt: Date;
  id: string;
}

/**
 * Persistence PlaceOrder, GetOrder and ListOrders need. The unique (user, idempotency key)
 * behind insertPlaced is what makes concurrent retries safe, not the checks before it.
 */
export interface OrderStore {
  findById(id: string): Promise<Order | undefined>;
  findByIdempotencyKey(userId: string, key: string): Promise<KeyedOrder | undefined>;
  /**
   * In one transaction: the order (PENDING), its items, its first timeline entry and the
   * OrderPlaced event. Undefined, with nothing written, when the user's key is already taken.
   */
  insertPlaced(order: NewOrder): Promise<Order | undefined>;
  /** Orders in the scope, newest first, after the cursor (or from the newest). */
  list(scope: OrderScope, after: OrderCursor | undefined, limit: number): Promise<Order[]>;
}

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
export const isUuid = (value: string) => uuidPattern.test(value);
