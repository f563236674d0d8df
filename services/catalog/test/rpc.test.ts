// The catalog over a real port with real clients: Connect over HTTP/1.1, gRPC and gRPC-Web.
import { randomUUID } from "node:crypto";
import { Code, createClient } from "@connectrpc/connect";
import { createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { CatalogService, type Product } from "@thinmesh/contracts/shop/catalog/v1/catalog_pb.js";
import { rpcError } from "@thinmesh/platform/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { bearer, connectClient, startTestCatalog, type TestCatalog, uniqueSku } from "./support.js";

let catalog: TestCatalog;
let client: ReturnType<typeof connectClient>;
let admin: ReturnType<typeof bearer>;

beforeAll(async () => {
  catalog = await startTestCatalog("catalog_rpc");
  client = connectClient(catalog.service.url);
  admin = bearer(await catalog.issuer.token({ roles: ["admin"] }));
});
afterAll(async () => {
  await catalog?.stop();
});

interface ProductInit {
  sku: string;
  name: string;
  description: string;
  price: { currencyCode: string; amountMinor: bigint };
  initialStock: number;
}

function productRequest(overrides: Partial<ProductInit> = {}): ProductInit {
  return {
    sku: uniqueSku("RPC"),
    name: "Enamel mug",
    description: "Blue, 350 ml",
    price: { currencyCode: "EUR", amountMinor: 1290n },
    initialStock: 10,
    ...overrides,
  };
}

async function createOne(overrides: Partial<ProductInit> = {}): Promise<Product> {
  const { product } = await client.createProduct(productRequest(overrides), admin);
  return product!;
}

/** Every product, by walking the pages. */
async function walk(pageSize: number): Promise<{ skus: string[]; pages: number[] }> {
  const skus: string[] = [];
  const pages: number[] = [];
  let pageToken = "";
  do {
    const page = await client.listProducts({ pageSize, pageToken });
    skus.push(...page.products.map((p) => p.sku));
    pages.push(page.products.length);
    pageToken = page.nextPageToken;
  } while (pageToken);
  return { skus, pages };
}

describe("reading needs no token", () => {
  it("gets a product by id", async () => {
    const created = await createOne({ name: "Canvas tote" });
    const { product } = await client.getProduct({ id: created.id });
    expect(product).toMatchObject({
      id: created.id,
      sku: created.sku,
      name: "Canvas tote",
      description: "Blue, 350 ml",
      price: { currencyCode: "EUR", amountMinor: 1290n },
      stockAvailable: 10,
    });
    expect(product?.createTime?.seconds).toBeGreaterThan(0n);
    expect(product?.updateTime?.seconds).toBeGreaterThan(0n);
  });

  it("is not_found naming an unknown id", async () => {
    const id = randomUUID();
    const error = await rpcError(client.getProduct({ id }));
    expect(error.code).toBe(Code.NotFound);
    expect(error.rawMessage).toContain(id);
  });

  it("walks all products exactly once, in SKU order, across pages", async () => {
    for (let i = 0; i < 7; i++) await createOne();
    const all = await walk(100);
    const paged = await walk(3);
    expect(paged.skus).toEqual(all.skus);
    expect(new Set(paged.skus).size).toBe(paged.skus.length);
    expect(paged.skus).toEqual([...paged.skus].sort());
    expect(paged.skus.length).toBeGreaterThanOrEqual(7);
    // Every page but the last is full; the last one ends the walk with an empty token.
    expect(paged.pages.slice(0, -1).every((n) => n === 3)).toBe(true);
    expect(paged.pages.length).toBe(Math.ceil(paged.skus.length / 3));
  });

  it("uses a page size of 20 when asked for 0", async () => {
    while ((await walk(100)).skus.length <= 20) await createOne();
    const page = await client.listProducts({});
    expect(page.products).toHaveLength(20);
    expect(page.nextPageToken).not.toBe("");
  });

  it("answers a batch in request order, with the missing ids", async () => {
    const a = await createOne();
    const b = await createOne();
    const missing = randomUUID();
    const { products, missingIds } = await client.getProducts({ ids: [b.id, missing, a.id] });
    expect(products.map((p) => p.sku)).toEqual([b.sku, a.sku]);
    expect(missingIds).toEqual([missing]);
  });
});

describe("admin writes", () => {
  it("creates a product; the same request again returns it unchanged", async () => {
    const request = productRequest();
    const { product } = await client.createProduct(request, admin);
    expect(product).toMatchObject({ sku: request.sku, stockAvailable: 10 });
    const { product: again } = await client.createProduct(request, admin);
    expect(again).toEqual(product);
    const listed = (await walk(100)).skus.filter((sku) => sku === request.sku);
    expect(listed).toHaveLength(1);
  });

  it("refuses the same SKU with other details as already_exists naming the SKU", async () => {
    const request = productRequest();
    await client.createProduct(request, admin);
    const error = await rpcError(client.createProduct({ ...request, name: "Other" }, admin));
    expect(error.code).toBe(Code.AlreadyExists);
    expect(error.rawMessage).toContain(request.sku);
  });

  it("sets stock absolutely, and not_found for an unknown product", async () => {
    const created = await createOne({ initialStock: 4 });
    const { product } = await client.setStock({ productId: created.id, quantity: 9 }, admin);
    expect(product?.stockAvailable).toBe(9);
    await client.setStock({ productId: created.id, quantity: 9 }, admin);
    expect((await client.getProduct({ id: created.id })).product?.stockAvailable).toBe(9);
    const error = await rpcError(client.setStock({ productId: randomUUID(), quantity: 1 }, admin));
    expect(error.code).toBe(Code.NotFound);
  });
});

describe("other protocols on the same port", () => {
  it("serves gRPC over HTTP/2", async () => {
    const grpc = createClient(
      CatalogService,
      createGrpcTransport({ baseUrl: catalog.service.url }),
    );
    const created = await createOne();
    const { product } = await grpc.getProduct({ id: created.id });
    expect(product?.sku).toBe(created.sku);
    const error = await rpcError(grpc.createProduct(productRequest()));
    expect(error.code).toBe(Code.Unauthenticated);
  });

  it("serves gRPC-Web over HTTP/1.1", async () => {
    const grpcWeb = createClient(
      CatalogService,
      createGrpcWebTransport({ baseUrl: catalog.service.url, httpVersion: "1.1" }),
    );
    const request = productRequest();
    const { product } = await grpcWeb.createProduct(request, admin);
    expect(product?.sku).toBe(request.sku);
    const { products } = await grpcWeb.getProducts({ ids: [product!.id] });
    expect(products.map((p) => p.sku)).toEqual([request.sku]);
  });
});
