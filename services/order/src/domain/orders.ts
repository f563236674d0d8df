import { randomUUID } from "node:crypto";
import { alreadyExists, notFound } from "@thinmesh/platform";
import { requestFingerprint } from "./fingerprint.js";
import type { KeyedOrder, Order, OrderScope, OrderStore } from "./order.js";
import { decodePageToken, encodePageToken, pageSizeOf } from "./page-token.js";
import { checkPlaceOrderInput, type PlaceOrderInput } from "./place-order-request.js";
import { type ProductCatalog, priceItems } from "./pricing.js";

/** Who is calling, as the verified access token says. */
export interface Caller {
  userId: string;
  isAdmin: boolean;
}

export interface PlaceOrderDeps {
  store: OrderStore;
  catalog: ProductCatalog;
}

/**
 * Places an order, safely under retries. The same user and idempotency key with the same
 * request get the order placed first (as it is now); with a different request,
 * already_exists. Otherwise the items are priced by the catalog and the order is stored
 * PENDING together with its OrderPlaced event, which starts the saga. Nothing is written
 * when any check fails. traceId is the trace of this call, kept on the order.
 */
export async function placeOrder(
  deps: PlaceOrderDeps,
  caller: Pick<Caller, "userId">,
  input: PlaceOrderInput,
  traceId: string,
): Promise<Order> {
  const request = checkPlaceOrderInput(input);
  const fingerprint = requestFingerprint(request);
  // The idempotency key is not looked up first: a first request (the common case) would pay
  // a query for nothing. A retry is found by the key's unique constraint when it is inserted,
  // or below, if pricing it fails now.
  let priced: ReturnType<typeof priceItems>;
  try {
    const products = await deps.catalog.findProducts(request.items.map((item) => item.productId));
    priced = priceItems(request.items, products);
  } catch (error) {
    // A retry gets its order whatever the catalog says now: prices may have changed since,
    // or the catalog may be unreachable.
    const earlier = await deps.store.findByIdempotencyKey(caller.userId, request.idempotencyKey);
    if (earlier) return sameRequestOrConflict(earlier, fingerprint, request.idempotencyKey);
    throw error;
  }
  const inserted = await deps.store.insertPlaced({
    id: randomUUID(),
    userId: caller.userId,
    idempotencyKey: request.idempotencyKey,
    requestFingerprint: fingerprint,
    items: priced.items,
    total: priced.total,
    paymentToken: request.paymentToken,
    traceId,
    placed: { step: "order placed", status: "PENDING", traceId, detail: placedDetail(priced) },
  });
  if (inserted) return inserted;

  // A retry, or a concurrent request with the same key that won the insert: the same rule.
  const winner = await deps.store.findByIdempotencyKey(caller.userId, request.idempotencyKey);
  if (!winner) {
    throw new Error(`idempotency key conflicted for user ${caller.userId} but no order has it`);
  }
  return sameRequestOrConflict(winner, fingerprint, request.idempotencyKey);
}

function sameRequestOrConflict(earlier: KeyedOrder, fingerprint: string, key: string): Order {
  if (earlier.requestFingerprint === fingerprint) return earlier.order;
  throw alreadyExists(
    `idempotency key "${key}" was already used for a different order; use a new key`,
  );
}

function placedDetail(priced: ReturnType<typeof priceItems>): string {
  const units = priced.items.reduce((sum, item) => sum + item.quantity, 0);
  const lines = priced.items.length;
  return `${lines} ${lines === 1 ? "item" : "items"}, ${units} ${units === 1 ? "unit" : "units"}`;
}

/**
 * An order its owner (or an admin) may see. Anyone else gets the same not_found as for an
 * order that does not exist, so order ids reveal nothing.
 */
export async function getOrder(store: OrderStore, caller: Caller, id: string): Promise<Order> {
  const order = await store.findById(id);
  if (!order || (order.userId !== caller.userId && !caller.isAdmin)) {
    throw notFound(`no order with id "${id}"`);
  }
  return order;
}

export interface OrderPage {
  orders: Order[];
  /** Empty on the last page. */
  nextPageToken: string;
}

/**
 * One page of the caller's orders (an admin's: everyone's), newest first. Keyset pagination
 * on (created_at, id): pages stay stable while new orders arrive.
 */
export async function listOrders(
  store: OrderStore,
  caller: Caller,
  request: { pageSize: number; pageToken: string },
): Promise<OrderPage> {
  const scope: OrderScope = caller.isAdmin ? "all" : { userId: caller.userId };
  const size = pageSizeOf(request.pageSize);
  const after = request.pageToken ? decodePageToken(scope, request.pageToken) : undefined;
  // One row more than the page tells whether another page follows.
  const rows = await store.list(scope, after, size + 1);
  const orders = rows.slice(0, size);
  const last = orders.at(-1);
  return {
    orders,
    nextPageToken: rows.length > size && last ? encodePageToken(scope, last) : "",
  };
}
