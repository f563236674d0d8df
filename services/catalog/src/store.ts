import type { AppDatabase } from "@thinmesh/platform";
import { asc, eq, gt, inArray, sql } from "drizzle-orm";
import { products, type schema } from "./db/schema.js";
import type { NewProduct, Product, ProductStore } from "./domain/product.js";

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
      const rows = await db.select().from(products).where(inArray(products.id, ids));
      return rows.map(productOf);
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
