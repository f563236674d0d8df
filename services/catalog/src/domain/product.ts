/** An amount in a currency's minor units (cents), never a float. */
export interface Money {
  /** ISO 4217, upper case, for example "EUR". */
  currencyCode: string;
  amountMinor: bigint;
}

export interface Product {
  id: string;
  sku: string;
  name: string;
  description: string;
  price: Money;
  /** Units available for sale now. */
  stockAvailable: number;
  /** The stock CreateProduct asked for; a retried create is recognised by it. */
  initialStock: number;
  createdAt: Date;
  updatedAt: Date;
}

/** What an admin (or the seed file) supplies to create a product. */
export interface NewProduct {
  sku: string;
  name: string;
  description: string;
  price: Money;
  initialStock: number;
}

/**
 * Persistence the catalog needs. The unique SKU and the non-negative stock are enforced by
 * the database behind this interface, so concurrent callers cannot break them.
 */
export interface ProductStore {
  /** Inserts the product unless its SKU is taken; undefined when it was. */
  insertIfSkuFree(product: NewProduct & { id: string }): Promise<Product | undefined>;
  /** Inserts each product whose SKU is free; resolves to how many were inserted. */
  insertAllIfSkuFree(products: (NewProduct & { id: string })[]): Promise<number>;
  findById(id: string): Promise<Product | undefined>;
  findBySku(sku: string): Promise<Product | undefined>;
  findByIds(ids: string[]): Promise<Product[]>;
  /** Products in SKU order (byte-wise) after the given SKU, or from the start. */
  listAfterSku(afterSku: string | undefined, limit: number): Promise<Product[]>;
  /** Sets stock_available; undefined when no product has that id. */
  setStock(id: string, quantity: number): Promise<Product | undefined>;
  hasAnyProduct(): Promise<boolean>;
}

/** Upper-case letters, digits and dashes, as in the CreateProduct contract ("MUG-BLUE"). */
export const skuPattern = /^[A-Z0-9][A-Z0-9-]{1,31}$/;
export const currencyPattern = /^[A-Z]{3}$/;
/** The most units one product may hold, as in the contract. */
export const maxStock = 1_000_000;

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
export const isUuid = (value: string) => uuidPattern.test(value);
