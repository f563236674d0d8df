// Who may call what: reads are public, writes need a valid access token with the admin role.
// Every kind of bad token is refused with unauthenticated, and nothing is written.
import { createHmac, createPublicKey } from "node:crypto";
import { Code } from "@connectrpc/connect";
import { createTestIssuer, rpcError } from "@thinmesh/platform/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { bearer, connectClient, startTestCatalog, type TestCatalog, uniqueSku } from "./support.js";

let catalog: TestCatalog;
let client: ReturnType<typeof connectClient>;
let bad: Map<string, string>;

beforeAll(async () => {
  catalog = await startTestCatalog("catalog_access");
  client = connectClient(catalog.service.url);
  bad = new Map(await badTokens());
});
afterAll(async () => {
  await catalog?.stop();
});

const base64url = (value: string | object) =>
  Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");
const parts = (token: string) => token.split(".") as [string, string, string];
const claimsOf = (token: string) =>
  JSON.parse(Buffer.from(parts(token)[1], "base64url").toString());

function hs256(header: object, payload: string, secret: string | Buffer): string {
  const head = base64url(header);
  const mac = createHmac("sha256", secret).update(`${head}.${payload}`).digest("base64url");
  return `${head}.${payload}.${mac}`;
}

/** Tokens a correct verifier must refuse, each asking for the admin role. */
async function badTokens(): Promise<[string, string][]> {
  const issuer = catalog.issuer;
  const admin = await issuer.token({ roles: ["admin"] });
  const [, adminPayload] = parts(admin);
  const customer = await issuer.token({ roles: ["customer"] });
  const [customerHeader, , customerSignature] = parts(customer);
  const kid = issuer.publicJwk.kid;
  const publicPem = createPublicKey({ key: issuer.publicJwk as never, format: "jwk" })
    .export({ type: "spki", format: "pem" })
    .toString();
  const impostor = await createTestIssuer();
  try {
    return [
      ["expired", await issuer.token({ roles: ["admin"], expiresIn: -60 })],
      [
        "not yet valid (nbf in the future)",
        await issuer.token({ roles: ["admin"], notBefore: 600 }),
      ],
      ["for another audience", await issuer.token({ roles: ["admin"], audience: "billing" })],
      [
        "from another issuer",
        await issuer.token({ roles: ["admin"], issuer: "https://evil.example" }),
      ],
      ["unsigned (alg none)", `${base64url({ alg: "none", typ: "JWT" })}.${adminPayload}.`],
      ["unsigned with a kid (alg none)", `${base64url({ alg: "none", kid })}.${adminPayload}.`],
      [
        "HS256 keyed with the public JWK",
        hs256({ alg: "HS256", typ: "JWT", kid }, adminPayload, JSON.stringify(issuer.publicJwk)),
      ],
      [
        "HS256 keyed with the public key PEM",
        hs256({ alg: "HS256", typ: "JWT", kid }, adminPayload, publicPem),
      ],
      [
        "a customer token with roles changed to admin",
        `${customerHeader}.${base64url({ ...claimsOf(customer), roles: ["admin"] })}.${customerSignature}`,
      ],
      [
        "signed with an unknown kid",
        await impostor.token({ roles: ["admin"], kid: "rotated-away" }),
      ],
      ["signed by another key under the published kid", await impostor.token({ roles: ["admin"] })],
      [
        "with the signature of another token",
        `${customerHeader}.${adminPayload}.${customerSignature}`,
      ],
      ["not a JWT", "not.a.jwt"],
    ];
  } finally {
    await impostor.close();
  }
}

async function skuExists(sku: string): Promise<boolean> {
  let pageToken = "";
  do {
    const page = await client.listProducts({ pageSize: 100, pageToken });
    if (page.products.some((p) => p.sku === sku)) return true;
    pageToken = page.nextPageToken;
  } while (pageToken);
  return false;
}

const newProduct = () => ({
  sku: uniqueSku("ACC"),
  name: "Cap",
  price: { currencyCode: "EUR", amountMinor: 1900n },
  initialStock: 1,
});

describe("public and internal reads", () => {
  it("list, get and batch-get without a token", async () => {
    const admin = bearer(await catalog.issuer.token({ roles: ["admin"] }));
    const { product } = await client.createProduct(newProduct(), admin);
    expect((await client.listProducts({ pageSize: 100 })).products.map((p) => p.id)).toContain(
      product!.id,
    );
    expect((await client.getProduct({ id: product!.id })).product?.sku).toBe(product!.sku);
    expect((await client.getProducts({ ids: [product!.id] })).products).toHaveLength(1);
  });
});

describe("admin writes", () => {
  it("work with a valid admin token", async () => {
    const admin = bearer(await catalog.issuer.token({ roles: ["customer", "admin"] }));
    const request = newProduct();
    const { product } = await client.createProduct(request, admin);
    expect(product?.sku).toBe(request.sku);
    const { product: restocked } = await client.setStock(
      { productId: product!.id, quantity: 8 },
      admin,
    );
    expect(restocked?.stockAvailable).toBe(8);
  });

  it("are unauthenticated without a token", async () => {
    const request = newProduct();
    const error = await rpcError(client.createProduct(request));
    expect(error.code).toBe(Code.Unauthenticated);
    expect(await skuExists(request.sku)).toBe(false);
  });

  it("are unauthenticated with a header that is not a bearer token", async () => {
    const request = newProduct();
    const token = await catalog.issuer.token({ roles: ["admin"] });
    const error = await rpcError(
      client.createProduct(request, { headers: { authorization: `Basic ${token}` } }),
    );
    expect(error.code).toBe(Code.Unauthenticated);
    expect(await skuExists(request.sku)).toBe(false);
  });

  it("are permission_denied for a valid token without the admin role", async () => {
    const customer = bearer(await catalog.issuer.token({ roles: ["customer"] }));
    const request = newProduct();
    const error = await rpcError(client.createProduct(request, customer));
    expect(error.code).toBe(Code.PermissionDenied);
    expect(error.rawMessage).toMatch(/admin/);
    expect(await skuExists(request.sku)).toBe(false);

    const admin = bearer(await catalog.issuer.token({ roles: ["admin"] }));
    const { product } = await client.createProduct(newProduct(), admin);
    const denied = await rpcError(
      client.setStock({ productId: product!.id, quantity: 0 }, customer),
    );
    expect(denied.code).toBe(Code.PermissionDenied);
    expect((await client.getProduct({ id: product!.id })).product?.stockAvailable).toBe(1);
  });

  it.each([
    "expired",
    "not yet valid (nbf in the future)",
    "for another audience",
    "from another issuer",
    "unsigned (alg none)",
    "unsigned with a kid (alg none)",
    "HS256 keyed with the public JWK",
    "HS256 keyed with the public key PEM",
    "a customer token with roles changed to admin",
    "signed with an unknown kid",
    "signed by another key under the published kid",
    "with the signature of another token",
    "not a JWT",
  ])("refuse a token %s with unauthenticated, writing nothing", async (what) => {
    const token = bad.get(what);
    expect(token, "no such bad token").toBeDefined();
    const admin = bearer(await catalog.issuer.token({ roles: ["admin"] }));
    const { product } = await client.createProduct(newProduct(), admin);

    const request = newProduct();
    const create = await rpcError(client.createProduct(request, bearer(token!)));
    expect(create.code).toBe(Code.Unauthenticated);
    expect(create.rawMessage).toMatch(/token/);
    const setStock = await rpcError(
      client.setStock({ productId: product!.id, quantity: 99 }, bearer(token!)),
    );
    expect(setStock.code).toBe(Code.Unauthenticated);
    expect(await skuExists(request.sku)).toBe(false);
    expect((await client.getProduct({ id: product!.id })).product?.stockAvailable).toBe(1);
  });

  it("refuse the platform's catalogue of forged tokens too", async () => {
    const forged = await catalog.issuer.forgedTokens({ roles: ["admin"] });
    expect(Object.keys(forged).length).toBeGreaterThan(5);
    for (const [what, token] of Object.entries(forged)) {
      const error = await rpcError(client.createProduct(newProduct(), bearer(token)));
      expect(error.code, what).toBe(Code.Unauthenticated);
    }
  });

  it("say why a token was refused", async () => {
    const expired = await catalog.issuer.token({ roles: ["admin"], expiresIn: -60 });
    const error = await rpcError(client.createProduct(newProduct(), bearer(expired)));
    expect(error.rawMessage).toMatch(/expired/);
    const audience = await catalog.issuer.token({ roles: ["admin"], audience: "billing" });
    const wrong = await rpcError(client.createProduct(newProduct(), bearer(audience)));
    expect(wrong.rawMessage).toMatch(/aud/);
  });
});
