import {
  type AnyExecutor,
  type AppDatabase,
  arrayLiteral,
  rowsOf,
  tableRows,
} from "@thinmesh/platform";
import { asc, eq, gt, inArray, sql } from "drizzle-orm";
import { products, reservationLines, reservations, type schema } from "./db/schema.js";
import type { NewProduct, Product, ProductStore } from "./domain/product.js";
import type {
  Reservation,
  ReservationLine,
  ReservationStore,
  ReservationTotal,
  StockOnHand,
} from "./domain/reservation.js";

type ProductRow = typeof products.$inferSelect;

/** The catalog's persistence on drizzle (Postgres or PGlite alike). */
export function createProductStore(db: AppDatabase<typeof schema>): ProductStore {
  return {
    async insertIfSkuFree(product) {
      // ON CONFLICT DO NOTHING waits for a concurrent insert of the same SKU to commit or roll
      // back, so exactly one of several identical requests inserts.
      const [row] = await db
        .insert(products)
        .values(rowOf(product))
        .onConflictDoNothing({ target: products.sku })
        .returning();
      return row && productOf(row);
    },

    async insertAllIfSkuFree(newProducts) {
      if (newProducts.length === 0) return 0;
      const rows = await db
        .insert(products)
        .values(newProducts.map(rowOf))
        .onConflictDoNothing({ target: products.sku })
        .returning({ id: products.id });
      return rows.length;
    },

    async findById(id) {
      const [row] = await db.select().from(products).where(eq(products.id, id));
      return row && productOf(row);
    },

    async findBySku(sku) {
      const [row] = await db.select().from(products).where(eq(products.sku, sku));
      return row && productOf(row);
    },

    async findByIds(ids) {
      // GetProducts' query, once per PlaceOrder: raw sql (see tableRows).
      const result = await db.execute(
        sql`select * from ${products} where id = any(${arrayLiteral(ids)}::uuid[])`,
      );
      return tableRows(products, result).map(productOf);
    },

    async listAfterSku(afterSku, limit) {
      const rows = await db
        .select()
        .from(products)
        .where(afterSku === undefined ? undefined : gt(products.sku, afterSku))
        .orderBy(asc(products.sku))
        .limit(limit);
      return rows.map(productOf);
    },

    async setStock(id, quantity) {
      const [row] = await db
        .update(products)
        .set({
          stockAvailable: quantity,
          // A repeated SetStock is a no-op, so it leaves update_time alone as well.
          updatedAt: sql`case when ${products.stockAvailable} = ${quantity} then ${products.updatedAt} else now() end`,
        })
        .where(eq(products.id, id))
        .returning();
      return row && productOf(row);
    },

    async hasAnyProduct() {
      const rows = await db.select({ id: products.id }).from(products).limit(1);
      return rows.length > 0;
    },
  };
}

function rowOf(product: NewProduct & { id: string }): typeof products.$inferInsert {
  return {
    id: product.id,
    sku: product.sku,
    name: product.name,
    description: product.description,
    priceMinor: product.price.amountMinor,
    currency: product.price.currencyCode,
    stockAvailable: product.initialStock,
    initialStock: product.initialStock,
  };
}

function productOf(row: ProductRow): Product {
  return {
    id: row.id,
    sku: row.sku,
    name: row.name,
    description: row.description,
    price: { currencyCode: row.currency, amountMinor: row.priceMinor },
    stockAvailable: row.stockAvailable,
    initialStock: row.initialStock,
    createdAt: row.createdAt,
    updatedAt: row.updatedAt,
  };
}

/**
 * Reservations on drizzle, inside the transaction given (an event handler's). Products are
 * always locked in id order, after the order's reservation row, so that concurrent handlers
 * (and SetStock, which locks one product) cannot deadlock.
 */
export function createReservationStore(tx: AnyExecutor): ReservationStore {
  return {
    async insertIfAbsent(orderId, status) {
      // ON CONFLICT DO NOTHING waits for a concurrent insert of the same order to commit or
      // roll back, so one transaction at a time decides for an order.
      const result = await tx.execute(sql`
        insert into ${reservations} (order_id, status) values (${orderId}, ${status})
        on conflict (order_id) do nothing
        returning order_id`);
      return rowsOf(result).length > 0;
    },

    async lockReservation(orderId) {
      // Sent together: a reservation's lines never change once written.
      const [locked, lines] = await Promise.all([
        tx.execute(sql`select * from ${reservations} where order_id = ${orderId} for update`),
        linesOf(tx, orderId),
      ]);
      const [row] = tableRows(reservations, locked);
      return row && { ...row, lines };
    },

    async lockProducts(ids) {
      if (ids.length === 0) return [];
      // FOR UPDATE locks the rows in the ORDER BY's order.
      const result = await tx.execute(sql`
        select id, sku, stock_available as "stockAvailable" from ${products}
         where id = any(${arrayLiteral(ids)}::uuid[])
         order by id
           for update`);
      return rowsOf<StockOnHand>(result);
    },

    async takeStock(orderId, lines) {
      if (lines.length === 0) return;
      // lockProducts holds the rows already, so one statement may update them in any order;
      // it goes out together with the reservation's lines. products_stock_available_not_negative
      // stays the last line of defence: a line that does not fit fails the whole transaction.
      const ids = arrayLiteral(lines.map((line) => line.productId));
      const quantities = arrayLiteral(lines.map((line) => line.quantity));
      await Promise.all([
        tx.execute(sql`
          update ${products} p
             set stock_available = p.stock_available - l.quantity, updated_at = now()
            from unnest(${ids}::uuid[], ${quantities}::int[]) as l(id, quantity)
           where p.id = l.id`),
        tx.execute(sql`
          insert into ${reservationLines} (order_id, product_id, quantity)
          select ${orderId}, id, quantity
            from unnest(${ids}::uuid[], ${quantities}::int[]) as l(id, quantity)`),
      ]);
    },

    async returnStock(lines) {
      // One by one in id order: these rows are not locked yet, and every transaction that
      // locks several products does so in id order.
      const sorted = [...lines].sort((a, b) => compareIds(a.productId, b.productId));
      for (const line of sorted) {
        await tx.execute(sql`
          update ${products} set stock_available = stock_available + ${line.quantity},
                                 updated_at = now()
           where id = ${line.productId}`);
      }
    },

    async setStatus(orderId, status) {
      await tx.execute(sql`
        update ${reservations} set status = ${status}, updated_at = now()
         where order_id = ${orderId}`);
    },
  };
}

const compareIds = (a: string, b: string) => {
  const [x, y] = [a.toLowerCase(), b.toLowerCase()];
  return x < y ? -1 : x > y ? 1 : 0;
};

async function linesOf(db: AnyExecutor, orderId: string): Promise<ReservationLine[]> {
  const result = await db.execute(sql`
    select product_id as "productId", quantity from ${reservationLines}
     where order_id = ${orderId}
     order by product_id`);
  return rowsOf<ReservationLine>(result);
}

/**
 * For invariant checks: every product with the units its reservations hold (reserved) and the
 * units sold to confirmed orders (committed), in SKU order. Works on any handle on the
 * catalog's database (the service's own, or one a test opened with any schema).
 */
export async function reservationTotals(db: AnyExecutor): Promise<ReservationTotal[]> {
  const unitsIn = (status: Reservation["status"]) => {
    const sum = sql`sum(${reservationLines.quantity}) filter (where ${reservations.status} = ${status})`;
    return sql<number>`coalesce(${sum}, 0)::int`.mapWith(Number);
  };
  return db
    .select({
      productId: products.id,
      sku: products.sku,
      stockAvailable: products.stockAvailable,
      reserved: unitsIn("reserved"),
      committed: unitsIn("committed"),
    })
    .from(products)
    .leftJoin(reservationLines, eq(reservationLines.productId, products.id))
    .leftJoin(reservations, eq(reservations.orderId, reservationLines.orderId))
    .groupBy(products.id)
    .orderBy(asc(products.sku));
}

/** For invariant checks: the reservations of these orders (all when none are given), with lines. */
export async function listReservations(
  db: AnyExecutor,
  orderIds?: readonly string[],
): Promise<Reservation[]> {
  if (orderIds?.length === 0) return [];
  const rows = await db
    .select()
    .from(reservations)
    .where(orderIds ? inArray(reservations.orderId, [...orderIds]) : undefined)
    .orderBy(asc(reservations.orderId));
  const lines = await db
    .select()
    .from(reservationLines)
    .where(orderIds ? inArray(reservationLines.orderId, [...orderIds]) : undefined)
    .orderBy(asc(reservationLines.orderId), asc(reservationLines.productId));
  return rows.map((row) => ({
    ...row,
    lines: lines
      .filter((line) => line.orderId === row.orderId)
      .map(({ productId, quantity }) => ({ productId, quantity })),
  }));
}
