// Every RPC refuses bad input before anything is written: malformed or mistyped JSON, values
// outside the contract's rules, and bodies over MAX_REQUEST_BYTES.
import { randomUUID } from "node:crypto";
import { Code } from "@connectrpc/connect";
import type { Product } from "@thinmesh/contracts/shop/catalog/v1/catalog_pb.js";
import { rpcError } from "@thinmesh/platform/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { bearer, connectClient, startTestCatalog, type TestCatalog, uniqueSku } from "./support.js";

const maxRequestBytes = 4096;
let catalog: TestCatalog;
let client: ReturnType<typeof connectClient>;
let adminToken: string;
let existing: Product;

beforeAll(async () => {
  catalog = await startTestCatalog("catalog_bad_input", {
    MAX_REQUEST_BYTES: String(maxRequestBytes),
  });
  client = connectClient(catalog.service.url);
  adminToken = await catalog.issuer.token({ roles: ["admin"] });
  const created = await client.createProduct(
    {
      sku: uniqueSku("BAD"),
      name: "Mug",
      price: { currencyCode: "EUR", amountMinor: 100n },
      initialStock: 5,
    },
    bearer(adminToken),
  );
  existing = created.product!;
});
afterAll(async () => {
  await catalog?.stop();
});

/** A Connect unary call in JSON, as curl would send it. */
async function post(method: string, body: string) {
  const response = await fetch(`${catalog.service.url}/shop.catalog.v1.CatalogService/${method}`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${adminToken}` },
    body,
  });
  const json = (await response.json()) as { code?: string; message?: string };
  return { status: response.status, code: json.code, message: json.message ?? "" };
}

/** What a write could have changed: every product as listed. */
async function snapshot() {
  const products: Product[] = [];
  let pageToken = "";
  do {
    const page = await client.listProducts({ pageSize: 100, pageToken });
    products.push(...page.products);
    pageToken = page.nextPageToken;
  } while (pageToken);
  return products;
}

const product = {
  sku: "MUG-NEW",
  name: "Mug",
  description: "",
  price: { currencyCode: "EUR", amountMinor: "100" },
  initialStock: 1,
};
const json = (value: unknown) => JSON.stringify(value);

// [rpc, what is wrong, body, what the message must say]. Type errors name the field as
// Message.field (a wrong type for a whole message names only the message type); rule
// violations name the field path.
const cases: [string, string, () => string, RegExp][] = [
  ["CreateProduct", "malformed JSON", () => '{"sku": "MUG-', /CreateProductRequest from JSON/],
  [
    "CreateProduct",
    "a number for the sku",
    () => json({ ...product, sku: 42 }),
    /CreateProductRequest\.sku from JSON/,
  ],
  [
    "CreateProduct",
    "text for the stock",
    () => json({ ...product, initialStock: "lots" }),
    /\.initial_stock from JSON/,
  ],
  [
    "CreateProduct",
    "text for the amount",
    () => json({ ...product, price: { currencyCode: "EUR", amountMinor: "a lot" } }),
    /Money\.amount_minor from JSON/,
  ],
  [
    "CreateProduct",
    "a list for the price",
    () => json({ ...product, price: [1] }),
    /Money from JSON/,
  ],
  [
    "CreateProduct",
    "a bad SKU",
    () => json({ ...product, sku: "mug blue" }),
    /sku: does not match/,
  ],
  ["CreateProduct", "an empty SKU", () => json({ ...product, sku: "" }), /sku: does not match/],
  [
    "CreateProduct",
    "an empty name",
    () => json({ ...product, name: "" }),
    /name: must be at least 1/,
  ],
  [
    "CreateProduct",
    "a name over 200 characters",
    () => json({ ...product, name: "n".repeat(201) }),
    /name: must be at most 200/,
  ],
  [
    "CreateProduct",
    "no price",
    () => json({ ...product, price: undefined }),
    /price: value is required/,
  ],
  [
    "CreateProduct",
    "a zero price",
    () => json({ ...product, price: { currencyCode: "EUR", amountMinor: "0" } }),
    /price: price must be greater than zero/,
  ],
  [
    "CreateProduct",
    "a negative price",
    () => json({ ...product, price: { currencyCode: "EUR", amountMinor: "-5" } }),
    /price\.amount_minor: must be greater than or equal to 0/,
  ],
  [
    "CreateProduct",
    "a lower-case currency",
    () => json({ ...product, price: { currencyCode: "eur", amountMinor: "5" } }),
    /price\.currency_code: does not match/,
  ],
  [
    "CreateProduct",
    "negative stock",
    () => json({ ...product, initialStock: -1 }),
    /initial_stock: must be greater than or equal to 0/,
  ],
  [
    "CreateProduct",
    "too much stock",
    () => json({ ...product, initialStock: 1_000_001 }),
    /initial_stock: .*less than or equal to 1000000/,
  ],
  [
    "CreateProduct",
    "stock beyond int32",
    () => json({ ...product, initialStock: 2 ** 31 }),
    /\.initial_stock from JSON.*out of range/,
  ],
  ["SetStock", "malformed JSON", () => "{", /SetStockRequest from JSON/],
  [
    "SetStock",
    "negative stock",
    () => json({ productId: existing.id, quantity: -1 }),
    /quantity: must be greater than or equal to 0/,
  ],
  [
    "SetStock",
    "fractional stock",
    () => json({ productId: existing.id, quantity: 1.5 }),
    /SetStockRequest\.quantity from JSON/,
  ],
  [
    "SetStock",
    "text for the quantity",
    () => json({ productId: existing.id, quantity: "ten" }),
    /SetStockRequest\.quantity from JSON/,
  ],
  [
    "SetStock",
    "a product id that is not a UUID",
    () => json({ productId: "42", quantity: 1 }),
    /product_id: must be a valid UUID/,
  ],
  ["SetStock", "no product id", () => json({ quantity: 1 }), /product_id: value is empty/],
  ["ListProducts", "malformed JSON", () => "[", /ListProductsRequest from JSON/],
  [
    "ListProducts",
    "a page size over 100",
    () => json({ pageSize: 101 }),
    /page_size: .*less than or equal to 100/,
  ],
  [
    "ListProducts",
    "a negative page size",
    () => json({ pageSize: -1 }),
    /page_size: must be greater than or equal to 0/,
  ],
  [
    "ListProducts",
    "text for the page size",
    () => json({ pageSize: "many" }),
    /ListProductsRequest\.page_size from JSON/,
  ],
  [
    "ListProducts",
    "a page token that is not ours",
    () => json({ pageToken: "bm90LW91cnM" }),
    /^page_token is not a token from a previous ListProducts response$/,
  ],
  [
    "ListProducts",
    "a page token over 256 characters",
    () => json({ pageToken: "a".repeat(257) }),
    /page_token: must be at most 256/,
  ],
  [
    "GetProduct",
    "an id that is not a UUID",
    () => json({ id: "42" }),
    /^invalid request: id: must be a valid UUID/,
  ],
  ["GetProduct", "no id", () => "{}", /^invalid request: id: value is empty/],
  ["GetProduct", "a number for the id", () => json({ id: 42 }), /GetProductRequest\.id from JSON/],
  ["GetProducts", "no ids", () => json({ ids: [] }), /ids: must contain at least 1/],
  [
    "GetProducts",
    "an id that is not a UUID",
    () => json({ ids: [randomUUID(), "42"] }),
    /ids\[1\]: must be a valid UUID/,
  ],
  [
    "GetProducts",
    "the same id twice",
    () => json({ ids: [existing.id, existing.id] }),
    /ids: repeated value must contain unique items/,
  ],
  [
    "GetProducts",
    "over 100 ids",
    () => json({ ids: Array.from({ length: 101 }, () => randomUUID()) }),
    /ids: must contain no more than 100/,
  ],
  [
    "GetProducts",
    "a string for the list",
    () => json({ ids: existing.id }),
    /GetProductsRequest\.ids from JSON/,
  ],
];

describe("bad input", () => {
  it.each(
    cases,
  )("%s with %s is invalid_argument naming the field", async (rpc, _what, body, field) => {
    const before = await snapshot();
    const response = await post(rpc, body());
    expect(response.code).toBe("invalid_argument");
    expect(response.status).toBe(400);
    expect(response.message).toMatch(field);
    expect(await snapshot()).toEqual(before);
  });

  it("names every violated field at once", async () => {
    const error = await rpcError(
      client.createProduct(
        { sku: "x", name: "", price: { currencyCode: "EUR", amountMinor: 0n }, initialStock: -3 },
        bearer(adminToken),
      ),
    );
    expect(error.code).toBe(Code.InvalidArgument);
    for (const field of ["sku", "name", "price", "initial_stock"]) {
      expect(error.rawMessage).toContain(`${field}:`);
    }
  });

  it.each([
    [
      "CreateProduct",
      () => json({ ...product, sku: uniqueSku("BIG"), description: "d".repeat(maxRequestBytes) }),
    ],
    [
      "SetStock",
      () => json({ productId: existing.id, quantity: 1, padding: "p".repeat(maxRequestBytes) }),
    ],
    ["ListProducts", () => json({ pageToken: "t".repeat(maxRequestBytes) })],
  ])("%s with a body over MAX_REQUEST_BYTES is resource_exhausted", async (rpc, body) => {
    const before = await snapshot();
    const response = await post(rpc, body());
    expect(response.code).toBe("resource_exhausted");
    expect(response.message).toMatch(/size|larger|limit|max/i);
    expect(await snapshot()).toEqual(before);
  });

  it("refuses an oversized message from a typed client too, writing nothing", async () => {
    const before = await snapshot();
    const sku = uniqueSku("BIG");
    const error = await rpcError(
      client.createProduct(
        {
          sku,
          name: "Mug",
          description: "d".repeat(maxRequestBytes),
          price: { currencyCode: "EUR", amountMinor: 100n },
        },
        bearer(adminToken),
      ),
    );
    expect(error.code).toBe(Code.ResourceExhausted);
    expect(await snapshot()).toEqual(before);
  });

  it("leaves the stock alone when SetStock is refused", async () => {
    await rpcError(client.setStock({ productId: existing.id, quantity: -1 }, bearer(adminToken)));
    const { product: after } = await client.getProduct({ id: existing.id });
    expect(after?.stockAvailable).toBe(existing.stockAvailable);
    expect(after?.updateTime).toEqual(existing.updateTime);
  });
});
