// Shared set-up for the catalog's tests: a migrated database with the store on it, a running
// catalog with a test token issuer, clients, and products with unique SKUs.
import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { CatalogService } from "@thinmesh/contracts/shop/catalog/v1/catalog_pb.js";
import type { Database } from "@thinmesh/platform";
import {
  openTestDatabase,
  startTestService,
  type TestDatabase,
  type TestService,
} from "@thinmesh/platform/testing";
import { sql } from "drizzle-orm";
import { schema } from "../src/db/schema.js";
import type { NewProduct, ProductStore } from "../src/domain/product.js";
import { catalogService } from "../src/service.js";
import { createProductStore } from "../src/store.js";

export const migrationsFolder = fileURLToPath(new URL("../drizzle", import.meta.url));

export interface TestStore {
  testDatabase: TestDatabase;
  database: Database<typeof schema>;
  store: ProductStore;
  /** Empties the products and reservations tables. */
  truncate(): Promise<void>;
  close(): Promise<void>;
}

/** A fresh, migrated catalog database (Postgres or PGlite, as the test run chose). */
export async function openTestStore(label: string): Promise<TestStore> {
  const database = await openTestDatabase(label, { schema, migrationsFolder });
  return {
    testDatabase: database.testDatabase,
    database,
    store: createProductStore(database.db),
    truncate: async () => {
      await database.db.execute(sql`truncate table reservation_lines, reservations, products`);
    },
    close: () => database.close(),
  };
}

export type TestCatalog = TestService<typeof schema>;

/**
 * Where the catalog's outbox relay delivers StockReserved and StockRejected unless a test
 * says otherwise (ORDER_URL is required once the catalog publishes events): nothing listens
 * there, so deliveries fail and wait for a retry that never matters to the test.
 */
export const noOrderService = "http://127.0.0.1:9";

/** The catalog service on a free port, trusting a test issuer's keys. */
export function startTestCatalog(
  label: string,
  extra: Record<string, string> = {},
): Promise<TestCatalog> {
  return startTestService(catalogService, label, { ORDER_URL: noOrderService, ...extra });
}

/** A Connect client over HTTP/1.1, as curl or a browser would talk. */
export function connectClient(baseUrl: string) {
  return createClient(CatalogService, createConnectTransport({ baseUrl, httpVersion: "1.1" }));
}

export const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });

/** A SKU no other test uses: PREFIX-XXXXXXXX. */
export function uniqueSku(prefix = "T"): string {
  return `${prefix}-${randomBytes(4).toString("hex").toUpperCase()}`;
}

export function newProduct(overrides: Partial<NewProduct> = {}): NewProduct {
  return {
    sku: uniqueSku(),
    name: "Enamel mug",
    description: "Blue, 350 ml",
    price: { currencyCode: "EUR", amountMinor: 1290n },
    initialStock: 10,
    ...overrides,
  };
}
