import { OrderPlacedSchema } from "@thinmesh/contracts/shop/events/v1/saga_pb.js";
import {
  type AnyExecutor,
  type AppDatabase,
  type EventBus,
  type Executor,
  isUniqueViolation,
  type Publish,
  tableRows,
  writeAtCommit,
} from "@thinmesh/platform";
import { and, asc, desc, eq, inArray, sql } from "drizzle-orm";
import { orderItems, orders, orderTimeline, type schema } from "./db/schema.js";
import {
  isUuid,
  type Order,
  type OrderHead,
  type OrderItem,
  type OrderStore,
  type TimelineEntry,
} from "./domain/order.js";
import type { SagaStore } from "./domain/saga.js";
import { orderPlacedEvent, publishFollowUp } from "./messages.js";

type OrderExecutor = Executor<typeof schema>;
type OrderRow = typeof orders.$inferSelect;

/** PlaceOrder's, GetOrder's and ListOrders' persistence on drizzle (Postgres or PGlite). */
export function createOrderStore(db: AppDatabase<typeof schema>, bus: EventBus): OrderStore {
  return {
    async findById(id) {
      if (!isUuid(id)) return undefined;
      const [row] = await db.select().from(orders).where(eq(orders.id, id));
      return row && (await withDetails(db, [row]))[0];
    },

    async findByIdempotencyKey(userId, key) {
      const [row] = tableRows(
        orders,
        await db.execute(
          sql`select * from ${orders} where user_id = ${userId} and idempotency_key = ${key}`,
        ),
      );
      if (!row) return undefined;
      const [order] = await withDetails(db, [row]);
      return { order: order!, requestFingerprint: row.requestFingerprint };
    },

    async insertPlaced(order) {
      try {
        // One statement, so one round trip and atomic without BEGIN and COMMIT: the order,
        // its items, its first timeline entry and OrderPlaced. The unique (user, key) decides
        // between identical requests racing: a second insert of the key waits for the first
        // to commit, then fails, and writes nothing.
        const inserted = await bus.executePublishing(
          [{ schema: OrderPlacedSchema, data: orderPlacedEvent(order), subject: order.id }],
          (outbox) => sql`
            with ${outbox},
            placed as (
              insert into ${orders} (id, user_id, idempotency_key, request_fingerprint, status,
                                     currency, total_minor, payment_token, trace_id)
              values (${order.id}, ${order.userId}, ${order.idempotencyKey},
                      ${order.requestFingerprint}, 'PENDING', ${order.total.currencyCode},
                      ${order.total.amountMinor.toString()}, ${order.paymentToken}, ${order.traceId})
              returning *),
            items as (
              insert into ${orderItems} (order_id, position, product_id, sku, name, quantity,
                                         unit_price_minor, line_total_minor)
              select ${order.id}::uuid, position, product_id, sku, name, quantity,
                     unit_price_minor, line_total_minor
                from jsonb_to_recordset(${JSON.stringify(order.items.map(itemRecord))}::jsonb)
                  as i(position int, product_id uuid, sku text, name text, quantity int,
                       unit_price_minor bigint, line_total_minor bigint)),
            entry as (
              ${timelineInsert(order.id, order.placed)})
            select * from placed`,
        );
        const [row] = tableRows(orders, inserted);
        const { paymentToken: _secret, ...head } = headOf(row!);
        // now() is the statement's start: the entry has the order's creation time.
        return {
          ...head,
          items: order.items,
          timeline: [{ ...order.placed, time: row!.createdAt }],
        };
      } catch (error) {
        if (isUniqueViolation(error, "orders_user_idempotency_key_unique")) return undefined;
        throw error;
      }
    },

    async list(scope, after, limit) {
      const rows = await db
        .select()
        .from(orders)
        .where(
          and(
            scope === "all" ? undefined : eq(orders.userId, scope.userId),
            // A row comparison, so that the (created_at desc, id desc) indexes serve the walk.
            after
              ? sql`(${orders.createdAt}, ${orders.id}) < (${after.createdAt.toISOString()}::timestamptz, ${after.id}::uuid)`
              : undefined,
          ),
        )
        .orderBy(desc(orders.createdAt), desc(orders.id))
        .limit(limit);
      return withDetails(db, rows);
    },
  };
}

/**
 * The saga's persistence inside the transaction of the event being handled: the inbox
 * record, the status change, its timeline entry and the follow-up event commit together.
 */
export function createSagaStore(tx: AnyExecutor, publish: Publish): SagaStore {
  const executor = tx as OrderExecutor;
  return {
    async head(orderId) {
      // Event payloads are not validated like requests; a malformed id is simply unknown.
      if (!isUuid(orderId)) return undefined;
      const [row] = await executor.select().from(orders).where(eq(orders.id, orderId));
      return row && headOf(row);
    },

    async advance(orderId, transition, cancelReason, total) {
      if (!isUuid(orderId)) return undefined;
      // Guarded by the expected status: of two events racing for one order, one moves it.
      const totalMatches = total
        ? sql`and currency = ${total.currencyCode} and total_minor = ${total.amountMinor.toString()}`
        : sql``;
      const [row] = tableRows(
        orders,
        await executor.execute(sql`
          update ${orders}
             set status = ${transition.to}, updated_at = now(),
                 cancel_reason = coalesce(${cancelReason ?? null}, cancel_reason)
           where id = ${orderId} and status = ${transition.from} ${totalMatches}
          returning *`),
      );
      return row && headOf(row);
    },

    async appendTimeline(orderId, entry) {
      // Nothing in the transaction reads the timeline back: the entry goes with the COMMIT.
      await writeAtCommit(executor, timelineInsert(orderId, entry));
    },

    publish: (followUp) => publishFollowUp(publish, followUp),
  };
}

const timelineInsert = (orderId: string, entry: Omit<TimelineEntry, "time">) =>
  sql`insert into ${orderTimeline} (order_id, step, status, trace_id, detail)
      values (${orderId}, ${entry.step}, ${entry.status}, ${entry.traceId}, ${entry.detail})`;

/** An item as a row of the JSON that PlaceOrder's item insert reads (bigints as strings). */
const itemRecord = (item: OrderItem, position: number) => ({
  position,
  product_id: item.productId,
  sku: item.sku,
  name: item.name,
  quantity: item.quantity,
  unit_price_minor: item.unitPrice.amountMinor.toString(),
  line_total_minor: item.lineTotal.amountMinor.toString(),
});

function headOf(row: OrderRow): OrderHead {
  return {
    id: row.id,
    userId: row.userId,
    status: row.status,
    total: { currencyCode: row.currency, amountMinor: row.totalMinor },
    cancelReason: row.cancelReason,
    traceId: row.traceId,
    paymentToken: row.paymentToken,
    createdAt: row.createdAt,
    updatedAt: row.updatedAt,
  };
}

/** The orders of the rows, in the rows' order, with their items and timelines (two queries). */
async function withDetails(executor: OrderExecutor, rows: OrderRow[]): Promise<Order[]> {
  if (rows.length === 0) return [];
  const ids = rows.map((row) => row.id);
  // One after the other: inside a transaction (and on PGlite) there is one connection.
  const itemRows = await executor
    .select()
    .from(orderItems)
    .where(inArray(orderItems.orderId, ids))
    .orderBy(asc(orderItems.orderId), asc(orderItems.position));
  const timelineRows = await executor
    .select()
    .from(orderTimeline)
    .where(inArray(orderTimeline.orderId, ids))
    .orderBy(asc(orderTimeline.seq));
  // An order has one currency; its items carry only amounts.
  const currencyOf = new Map(rows.map((row) => [row.id, row.currency]));
  const itemsOf = groupBy(
    itemRows,
    (row) => row.orderId,
    (row): OrderItem => {
      const currencyCode = currencyOf.get(row.orderId)!;
      return {
        productId: row.productId,
        sku: row.sku,
        name: row.name,
        quantity: row.quantity,
        unitPrice: { currencyCode, amountMinor: row.unitPriceMinor },
        lineTotal: { currencyCode, amountMinor: row.lineTotalMinor },
      };
    },
  );
  const timelineOf = groupBy(
    timelineRows,
    (row) => row.orderId,
    (row): TimelineEntry => ({
      step: row.step,
      status: row.status,
      time: row.createdAt,
      traceId: row.traceId,
      detail: row.detail,
    }),
  );
  return rows.map((row) => {
    const { paymentToken: _secret, ...head } = headOf(row);
    return { ...head, items: itemsOf.get(row.id) ?? [], timeline: timelineOf.get(row.id) ?? [] };
  });
}

function groupBy<Row, Value>(
  rows: Row[],
  keyOf: (row: Row) => string,
  toValue: (row: Row) => Value,
): Map<string, Value[]> {
  const groups = new Map<string, Value[]>();
  for (const row of rows) {
    const key = keyOf(row);
    const group = groups.get(key) ?? [];
    group.push(toValue(row));
    groups.set(key, group);
  }
  return groups;
}
