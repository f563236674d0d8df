import { randomUUID } from "node:crypto";
import { alreadyExists, invalidArgument, notFound } from "@thinmesh/platform";
import { decodePageToken, encodePageToken, pageSizeOf } from "./page-token.js";
import {
  currencyPattern,
  isUuid,
  maxStock,
  type NewProduct,
  type Product,
  type ProductStore,
} from "./product.js";

export interface ProductPage {
  products: Product[];
  /** Empty on the last page. */
  nextPageToken: string;
}

/** One page of products in SKU order (keyset pagination: stable while products are added). */
export async function listProducts(
  store: ProductStore,
  request: { pageSize: number; pageToken: string },
): Promise<ProductPage> {
  const size = pageSizeOf(request.pageSize);
  const after = request.pageToken ? decodePageToken(request.pageToken) : undefined;
  // One row more than the page tells whether another page follows.
  const rows = await store.listAfterSku(after, size + 1);
  const products = rows.slice(0, size);
  const last = products.at(-1);
  return { products, nextPageToken: rows.length > size && last ? encodePageToken(last.sku) : "" };
}

export async function getProduct(store: ProductStore, id: string): Promise<Product> {
  checkId(id, "id");
  const product = await store.findById(id);
  if (!product) throw notFound(`no product with id "${id}"`);
  return product;
}

/** The products found, in the order asked for, and the ids of those that do not exist. */
export async function getProducts(
  store: ProductStore,
  ids: string[],
): Promise<{ products: Product[]; missingIds: string[] }> {
  for (const [index, id] of ids.entries()) checkId(id, `ids[${index}]`);
  const found = ids.length ? await store.findByIds(ids) : [];
  // The database answers with lower-case UUIDs whatever case the caller used.
  const byId = new Map(found.map((product) => [product.id.toLowerCase(), product]));
  const products: Product[] = [];
  const missingIds: string[] = [];
  for (const id of ids) {
    const product = byId.get(id.toLowerCase());
    if (product) products.push(product);
    else missingIds.push(id);
  }
  return { products, missingIds };
}

/**
 * Creates a product, safely under retries: the unique SKU decides who wins, and a request
 * identical to the one that created the product gets that product back. The same SKU with
 * different details is already_exists.
 */
export async function createProduct(store: ProductStore, request: NewProduct): Promise<Product> {
  checkNewProduct(request);
  const inserted = await store.insertIfSkuFree({ id: randomUUID(), ...request });
  if (inserted) return inserted;
  const existing = await store.findBySku(request.sku);
  // Products are never deleted, so a SKU that conflicted is there to be read.
  if (!existing) throw new Error(`sku "${request.sku}" conflicted but no product has it`);
  const differences = differencesFrom(existing, request);
  if (differences.length === 0) return existing;
  throw alreadyExists(
    `a product with sku "${request.sku}" already exists with a different ${differences.join(", ")}`,
  );
}

/** Sets the units available for sale to an absolute quantity (so a retry changes nothing). */
export async function setStock(
  store: ProductStore,
  productId: string,
  quantity: number,
): Promise<Product> {
  checkId(productId, "product_id");
  checkStock(quantity, "quantity");
  const product = await store.setStock(productId, quantity);
  if (!product) throw notFound(`no product with id "${productId}"`);
  return product;
}

/**
 * The invariants a product must meet wherever it comes from (an RPC, the seed file). The
 * contract's validation rules check requests in more detail; the database backs these.
 */
export function checkNewProduct(product: NewProduct): void {
  if (!product.name) throw invalidArgument("name must not be empty");
  if (product.price.amountMinor <= 0n) throw invalidArgument("price must be greater than zero");
  if (!currencyPattern.test(product.price.currencyCode)) {
    throw invalidArgument(
      `price.currency_code must be an ISO 4217 code like "EUR", got "${product.price.currencyCode}"`,
    );
  }
  checkStock(product.initialStock, "initial_stock");
}

function checkStock(quantity: number, field: string): void {
  if (!Number.isInteger(quantity) || quantity < 0 || quantity > maxStock) {
    throw invalidArgument(`${field} must be a whole number from 0 to ${maxStock}, got ${quantity}`);
  }
}

function checkId(id: string, field: string): void {
  if (!isUuid(id)) throw invalidArgument(`${field} must be a UUID, got "${id}"`);
}

function differencesFrom(existing: Product, request: NewProduct): string[] {
  const differences: string[] = [];
  if (existing.name !== request.name) differences.push("name");
  if (existing.description !== request.description) differences.push("description");
  if (
    existing.price.amountMinor !== request.price.amountMinor ||
    existing.price.currencyCode !== request.price.currencyCode
  ) {
    differences.push("price");
  }
  if (existing.initialStock !== request.initialStock) differences.push("initial_stock");
  return differences;
}
