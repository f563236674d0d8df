import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConfigError, startService } from "@thinmesh/platform";
import { createTestDatabase, createTestIssuer, testEnv } from "@thinmesh/platform/testing";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { bundledSeedFile } from "../src/config.js";
import { createProduct } from "../src/domain/products.js";
import { loadSeedFile, SeedFileError, seedProducts } from "../src/domain/seed.js";
import { catalogService } from "../src/service.js";
import {
  connectClient,
  newProduct,
  noOrderService,
  openTestStore,
  startTestCatalog,
  type TestStore,
} from "./support.js";

const scratch = mkdtempSync(join(tmpdir(), "catalog-seed-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

function seedFile(name: string, content: unknown): string {
  const path = join(scratch, name);
  writeFileSync(path, typeof content === "string" ? content : JSON.stringify(content));
  return path;
}

const mug = {
  sku: "MUG-BLUE",
  name: "Enamel mug",
  description: "Blue",
  price: { currencyCode: "EUR", amountMinor: 1290 },
  stock: 3,
};

describe("the seed file", () => {
  it("ships a valid, realistic seed set", async () => {
    const products = await loadSeedFile(bundledSeedFile);
    expect(products.length).toBeGreaterThanOrEqual(8);
    expect(products.length).toBeLessThanOrEqual(12);
    expect(new Set(products.map((p) => p.sku)).size).toBe(products.length);
    for (const product of products) {
      expect(product.price.amountMinor).toBeGreaterThan(0n);
      expect(product.name).not.toBe("");
    }
  });

  it("reads amounts as exact minor units", async () => {
    const [product] = await loadSeedFile(seedFile("one.json", [mug]));
    expect(product).toEqual({
      sku: "MUG-BLUE",
      name: "Enamel mug",
      description: "Blue",
      price: { currencyCode: "EUR", amountMinor: 1290n },
      initialStock: 3,
    });
  });

  it.each([
    ["not JSON", "[{", /is not valid JSON/],
    ["not a list", { products: [] }, /the file: .*array/i],
    ["a missing price", [{ ...mug, price: undefined }], /\[0\]\.price/],
    [
      "a zero price",
      [{ ...mug, price: { currencyCode: "EUR", amountMinor: 0 } }],
      /\[0\]\.price\.amountMinor/,
    ],
    [
      "a fractional price",
      [{ ...mug, price: { currencyCode: "EUR", amountMinor: 12.9 } }],
      /\[0\]\.price\.amountMinor/,
    ],
    [
      "a lower-case currency",
      [{ ...mug, price: { currencyCode: "eur", amountMinor: 1 } }],
      /\[0\]\.price\.currencyCode/,
    ],
    ["negative stock", [mug, { ...mug, sku: "MUG-RED", stock: -1 }], /\[1\]\.stock/],
    ["a bad SKU", [{ ...mug, sku: "mug blue" }], /\[0\]\.sku/],
    ["a duplicate SKU", [mug, { ...mug }], /\[1\]\.sku: duplicate sku "MUG-BLUE"/],
    ["an unknown field", [{ ...mug, colour: "blue" }], /colour/],
  ])("is refused with %s, naming the file and the entry", async (name, content, problem) => {
    const path = seedFile(`${name.replace(/\W/g, "-")}.json`, content);
    const error = await loadSeedFile(path).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(SeedFileError);
    expect((error as Error).message).toContain(path);
    expect((error as Error).message).toMatch(problem);
  });

  it("is refused when it cannot be read", async () => {
    const path = join(scratch, "missing.json");
    await expect(loadSeedFile(path)).rejects.toThrow(`seed file ${path}: cannot be read`);
  });
});

describe("seeding the store", () => {
  let t: TestStore;
  beforeAll(async () => {
    t = await openTestStore("catalog_seed");
  });
  afterAll(async () => {
    await t?.close();
  });
  beforeEach(async () => {
    await t.truncate();
  });

  it("fills an empty catalog once; seeding again inserts nothing", async () => {
    const seed = await loadSeedFile(bundledSeedFile);
    expect(await seedProducts(t.store, seed)).toBe(seed.length);
    expect(await seedProducts(t.store, seed)).toBe(0);
    const stored = await t.store.listAfterSku(undefined, 100);
    expect(stored.map((p) => p.sku)).toEqual(seed.map((p) => p.sku).sort());
    const mugs = stored.find((p) => p.sku === seed[0]!.sku)!;
    expect(mugs.stockAvailable).toBe(seed[0]!.initialStock);
  });

  it("leaves a catalog that already has products alone", async () => {
    const own = await createProduct(t.store, newProduct());
    expect(await seedProducts(t.store, await loadSeedFile(bundledSeedFile))).toBe(0);
    expect(await t.store.listAfterSku(undefined, 100)).toEqual([own]);
  });

  it("is harmless when replicas seed at the same time", async () => {
    const seed = await loadSeedFile(bundledSeedFile);
    const inserted = await Promise.all([1, 2, 3].map(() => seedProducts(t.store, seed)));
    expect(inserted.reduce((a, b) => a + b, 0)).toBe(seed.length);
    expect(await t.store.listAfterSku(undefined, 100)).toHaveLength(seed.length);
  });
});

describe("seeding on start", () => {
  it("serves the seed products when SEED_PRODUCTS is true", async () => {
    const path = seedFile("start.json", [mug, { ...mug, sku: "CAP-BLACK", name: "Cap" }]);
    const catalog = await startTestCatalog("catalog_seed_start", {
      SEED_PRODUCTS: "true",
      SEED_FILE: path,
    });
    try {
      const { products, nextPageToken } = await connectClient(catalog.service.url).listProducts({});
      expect(products.map((p) => [p.sku, p.name, p.price?.amountMinor, p.stockAvailable])).toEqual([
        ["CAP-BLACK", "Cap", 1290n, 3],
        ["MUG-BLUE", "Enamel mug", 1290n, 3],
      ]);
      expect(nextPageToken).toBe("");
    } finally {
      await catalog.stop();
    }
  });

  it("does not seed unless asked to", async () => {
    const catalog = await startTestCatalog("catalog_seed_off");
    try {
      expect((await connectClient(catalog.service.url).listProducts({})).products).toEqual([]);
    } finally {
      await catalog.stop();
    }
  });

  it("refuses to start with a bad seed file, naming the file and the problem", async () => {
    const issuer = await createTestIssuer();
    const database = await createTestDatabase("catalog_seed_bad");
    const path = seedFile("bad.json", [{ ...mug, stock: -5 }]);
    try {
      const started = startService(
        catalogService,
        testEnv(database, {
          AUTH_JWKS_URL: issuer.jwksUrl,
          ORDER_URL: noOrderService,
          SEED_PRODUCTS: "true",
          SEED_FILE: path,
        }),
      );
      const error = await started.then(
        async (service) => {
          await service.stop();
          return undefined;
        },
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(ConfigError);
      expect((error as Error).message).toContain(`SEED_FILE: seed file ${path}`);
      expect((error as Error).message).toMatch(/\[0\]\.stock/);
    } finally {
      await database.drop();
      await issuer.close();
    }
  });
});
