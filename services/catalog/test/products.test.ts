// The catalog's domain rules, run against the store on a real database (Postgres, or PGlite
// with THINMESH_TEST_DB=pglite), so the database's constraints are part of what is tested.
import { randomUUID } from "node:crypto";
import { sqlState } from "@thinmesh/platform";
import { domainError } from "@thinmesh/platform/testing";
import { eq, sql } from "drizzle-orm";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { products } from "../src/db/schema.js";
import { encodePageToken } from "../src/domain/page-token.js";
import type { Product } from "../src/domain/product.js";
import {
  createProduct,
  getProduct,
  getProducts,
  listProducts,
  setStock,
} from "../src/domain/products.js";
import { newProduct, openTestStore, type TestStore, uniqueSku } from "./support.js";

let t: TestStore;
beforeAll(async () => {
  t = await openTestStore("catalog_products");
});
afterAll(async () => {
  await t?.close();
});
beforeEach(async () => {
  await t.truncate();
});

async function allProducts(): Promise<Product[]> {
  return t.store.listAfterSku(undefined, 1000);
}

describe("createProduct", () => {
  it("stores the product with a generated id and its initial stock available", async () => {
    const request = newProduct({ initialStock: 7 });
    const product = await createProduct(t.store, request);
    expect(product.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(product).toMatchObject({
      sku: request.sku,
      name: request.name,
      description: request.description,
      price: { currencyCode: "EUR", amountMinor: 1290n },
      stockAvailable: 7,
    });
    expect(await getProduct(t.store, product.id)).toEqual(product);
  });

  it("returns the existing product when the same request is repeated (a retry)", async () => {
    const request = newProduct();
    const first = await createProduct(t.store, request);
    const again = await createProduct(t.store, { ...request });
    expect(again).toEqual(first);
    expect(await allProducts()).toHaveLength(1);
  });

  it("recognises a retry even after the stock has changed since", async () => {
    const request = newProduct({ initialStock: 10 });
    const first = await createProduct(t.store, request);
    await setStock(t.store, first.id, 3);
    const again = await createProduct(t.store, request);
    expect(again.id).toBe(first.id);
    expect(again.stockAvailable).toBe(3);
  });

  it("creates once when identical requests race", async () => {
    const request = newProduct();
    const results = await Promise.all(
      Array.from({ length: 8 }, () => createProduct(t.store, { ...request })),
    );
    expect(new Set(results.map((p) => p.id)).size).toBe(1);
    expect(await allProducts()).toHaveLength(1);
  });

  it.each([
    ["name", { name: "Another mug" }],
    ["description", { description: "Red, 500 ml" }],
    ["price", { price: { currencyCode: "EUR", amountMinor: 1299n } }],
    ["price", { price: { currencyCode: "USD", amountMinor: 1290n } }],
    ["initial_stock", { initialStock: 11 }],
  ])("refuses the same SKU with a different %s, naming the SKU", async (field, change) => {
    const request = newProduct();
    const original = await createProduct(t.store, request);
    const error = await domainError(createProduct(t.store, { ...request, ...change }));
    expect(error.kind).toBe("already_exists");
    expect(error.message).toContain(`"${request.sku}"`);
    expect(error.message).toContain(field);
    expect(await allProducts()).toEqual([original]);
  });

  it("lets exactly one of two different requests for one SKU win a race", async () => {
    const sku = uniqueSku();
    const outcomes = await Promise.allSettled([
      createProduct(t.store, newProduct({ sku, name: "First" })),
      createProduct(t.store, newProduct({ sku, name: "Second" })),
    ]);
    const won = outcomes.filter((o) => o.status === "fulfilled");
    const lost = outcomes.filter((o) => o.status === "rejected");
    expect(won).toHaveLength(1);
    expect(lost).toHaveLength(1);
    expect((lost[0] as PromiseRejectedResult).reason).toMatchObject({ kind: "already_exists" });
    expect(await allProducts()).toHaveLength(1);
  });

  it("refuses a price that is not positive and negative stock, writing nothing", async () => {
    const zero = await domainError(
      createProduct(t.store, newProduct({ price: { currencyCode: "EUR", amountMinor: 0n } })),
    );
    expect(zero.kind).toBe("invalid_argument");
    expect(zero.message).toMatch(/price/);
    const negative = await domainError(createProduct(t.store, newProduct({ initialStock: -1 })));
    expect(negative.message).toMatch(/initial_stock/);
    expect(await allProducts()).toEqual([]);
  });
});

describe("stock", () => {
  it("sets stock to an absolute quantity; repeating it changes nothing", async () => {
    const product = await createProduct(t.store, newProduct({ initialStock: 5 }));
    const set = await setStock(t.store, product.id, 42);
    expect(set.stockAvailable).toBe(42);
    expect(set.updatedAt.getTime()).toBeGreaterThanOrEqual(product.updatedAt.getTime());
    const repeated = await setStock(t.store, product.id, 42);
    expect(repeated).toEqual(set);
    expect((await getProduct(t.store, product.id)).stockAvailable).toBe(42);
    expect((await setStock(t.store, product.id, 0)).stockAvailable).toBe(0);
  });

  it("refuses negative stock in the domain", async () => {
    const product = await createProduct(t.store, newProduct({ initialStock: 5 }));
    const error = await domainError(setStock(t.store, product.id, -1));
    expect(error.kind).toBe("invalid_argument");
    expect(error.message).toMatch(/quantity/);
    expect((await getProduct(t.store, product.id)).stockAvailable).toBe(5);
  });

  it("is guarded by the database too: a direct negative update violates a CHECK", async () => {
    const product = await createProduct(t.store, newProduct({ initialStock: 5 }));
    const throughStore = await t.store.setStock(product.id, -1).catch((e: unknown) => e);
    expect(sqlState(throughStore)).toBe("23514");
    const decrement = await t.database.db
      .update(products)
      .set({ stockAvailable: sql`${products.stockAvailable} - 6` })
      .where(eq(products.id, product.id))
      .catch((e: unknown) => e);
    expect(sqlState(decrement)).toBe("23514");
    expect((await getProduct(t.store, product.id)).stockAvailable).toBe(5);
  });

  it("rejects a non-positive price in the database as well", async () => {
    const inserted = await t.store
      .insertIfSkuFree({
        id: randomUUID(),
        ...newProduct({ price: { currencyCode: "EUR", amountMinor: 0n } }),
      })
      .catch((e: unknown) => e);
    expect(sqlState(inserted)).toBe("23514");
  });

  it("is not_found for an unknown product", async () => {
    const id = randomUUID();
    const error = await domainError(setStock(t.store, id, 1));
    expect(error.kind).toBe("not_found");
    expect(error.message).toContain(id);
  });
});

describe("reading", () => {
  it("gets a product by id, and names the id it cannot find", async () => {
    const product = await createProduct(t.store, newProduct());
    expect((await getProduct(t.store, product.id)).sku).toBe(product.sku);
    const id = randomUUID();
    const error = await domainError(getProduct(t.store, id));
    expect(error.kind).toBe("not_found");
    expect(error.message).toContain(id);
    const notUuid = await domainError(getProduct(t.store, "42"));
    expect(notUuid.kind).toBe("invalid_argument");
  });

  it("gets a batch in the order asked for, with the missing ids", async () => {
    const a = await createProduct(t.store, newProduct());
    const b = await createProduct(t.store, newProduct());
    const missing = randomUUID();
    const result = await getProducts(t.store, [b.id, missing, a.id.toUpperCase()]);
    expect(result.products.map((p) => p.id)).toEqual([b.id, a.id]);
    expect(result.missingIds).toEqual([missing]);
  });

  it("lists by SKU in byte order, one page at a time, each product exactly once", async () => {
    // Dashes sort before digits and letters byte-wise; a linguistic collation would ignore them.
    const skus = ["AB-C", "ABB", "A-1", "A1", "B", "B-", "ZZ", "AA", "A0"].map((s) =>
      s.length < 2 ? `${s}0` : s,
    );
    for (const sku of skus) await createProduct(t.store, newProduct({ sku }));
    const seen: string[] = [];
    let pageToken = "";
    let pages = 0;
    do {
      const page = await listProducts(t.store, { pageSize: 2, pageToken });
      expect(page.products.length).toBeLessThanOrEqual(2);
      seen.push(...page.products.map((p) => p.sku));
      pageToken = page.nextPageToken;
      pages++;
    } while (pageToken);
    expect(seen).toEqual([...skus].sort());
    expect(pages).toBe(Math.ceil(skus.length / 2));
  });

  it("orders SKUs byte-wise whatever the database's default collation", async () => {
    const result = await t.database.db.execute<{ collation_name: string | null }>(
      sql`select collation_name from information_schema.columns
          where table_name = 'products' and column_name = 'sku'`,
    );
    const rows = Array.isArray(result) ? result : (result as { rows: unknown[] }).rows;
    expect(rows).toEqual([{ collation_name: "C" }]);
  });

  it("ends with an empty token when the last page is exactly full", async () => {
    for (let i = 0; i < 4; i++) await createProduct(t.store, newProduct());
    const first = await listProducts(t.store, { pageSize: 2, pageToken: "" });
    const second = await listProducts(t.store, { pageSize: 2, pageToken: first.nextPageToken });
    expect(first.nextPageToken).not.toBe("");
    expect(second.products).toHaveLength(2);
    expect(second.nextPageToken).toBe("");
  });

  it("uses 20 as the default page size", async () => {
    for (let i = 0; i < 21; i++) await createProduct(t.store, newProduct());
    const page = await listProducts(t.store, { pageSize: 0, pageToken: "" });
    expect(page.products).toHaveLength(20);
    const rest = await listProducts(t.store, { pageSize: 0, pageToken: page.nextPageToken });
    expect(rest.products).toHaveLength(1);
    expect(rest.nextPageToken).toBe("");
  });

  it("continues after a token's SKU even when that product is not there", async () => {
    await createProduct(t.store, newProduct({ sku: "MUG-A" }));
    await createProduct(t.store, newProduct({ sku: "MUG-C" }));
    const page = await listProducts(t.store, { pageSize: 10, pageToken: encodePageToken("MUG-B") });
    expect(page.products.map((p) => p.sku)).toEqual(["MUG-C"]);
  });

  it("rejects a page token it did not issue", async () => {
    const error = await domainError(listProducts(t.store, { pageSize: 5, pageToken: "garbage" }));
    expect(error.kind).toBe("invalid_argument");
    expect(error.message).toBe("page_token is not a token from a previous ListProducts response");
  });
});
