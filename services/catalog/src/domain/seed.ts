import { randomUUID } from "node:crypto";
import { readFile } from "node:fs/promises";
import { z } from "zod";
import {
  currencyPattern,
  maxStock,
  type NewProduct,
  type ProductStore,
  skuPattern,
} from "./product.js";
import { checkNewProduct } from "./products.js";

/** A seed file that cannot be used; the message names the file and what is wrong. */
export class SeedFileError extends Error {
  constructor(
    readonly path: string,
    problem: string,
  ) {
    super(`seed file ${path}: ${problem}`);
    this.name = "SeedFileError";
  }
}

const seedProductSchema = z.strictObject({
  sku: z.string().regex(skuPattern, "must be upper-case letters, digits and dashes (2-32)"),
  name: z.string().min(1).max(200),
  description: z.string().max(2000).default(""),
  price: z.strictObject({
    currencyCode: z.string().regex(currencyPattern, 'must be an ISO 4217 code like "EUR"'),
    // JSON has no 64-bit integers; amounts up to 2^53 are plenty for a seed file.
    amountMinor: z.number().int().positive().max(Number.MAX_SAFE_INTEGER),
  }),
  stock: z.number().int().min(0).max(maxStock),
});

const seedFileSchema = z.array(seedProductSchema).superRefine((products, ctx) => {
  const seen = new Set<string>();
  products.forEach((product, index) => {
    if (seen.has(product.sku)) {
      ctx.addIssue({
        code: "custom",
        path: [index, "sku"],
        message: `duplicate sku "${product.sku}"`,
      });
    }
    seen.add(product.sku);
  });
});

/** Reads and checks a seed file: a JSON array of {sku, name, description, price, stock}. */
export async function loadSeedFile(path: string): Promise<NewProduct[]> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    throw new SeedFileError(path, `cannot be read (${(error as Error).message})`);
  }
  return parseSeedFile(path, text);
}

export function parseSeedFile(path: string, text: string): NewProduct[] {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new SeedFileError(path, `is not valid JSON (${(error as Error).message})`);
  }
  const result = seedFileSchema.safeParse(json);
  if (!result.success) {
    const problems = result.error.issues.map((issue) => `${pathOf(issue.path)}: ${issue.message}`);
    throw new SeedFileError(path, problems.join("; "));
  }
  return result.data.map((product) => {
    const newProduct: NewProduct = {
      sku: product.sku,
      name: product.name,
      description: product.description,
      price: {
        currencyCode: product.price.currencyCode,
        amountMinor: BigInt(product.price.amountMinor),
      },
      initialStock: product.stock,
    };
    checkNewProduct(newProduct);
    return newProduct;
  });
}

/**
 * Fills an empty catalog with the seed products. A catalog that has any product is left as it
 * is (an admin owns it now); replicas seeding at once are harmless because a SKU that is
 * already there is skipped. Resolves to how many products were inserted.
 */
export async function seedProducts(store: ProductStore, products: NewProduct[]): Promise<number> {
  if (products.length === 0 || (await store.hasAnyProduct())) return 0;
  return store.insertAllIfSkuFree(products.map((product) => ({ id: randomUUID(), ...product })));
}

/** A zod issue path as it reads in the file: [2].price.amountMinor. */
function pathOf(path: PropertyKey[]): string {
  if (path.length === 0) return "the file";
  return path
    .map((key) => (typeof key === "number" ? `[${key}]` : `.${String(key)}`))
    .join("")
    .replace(/^\./, "");
}
