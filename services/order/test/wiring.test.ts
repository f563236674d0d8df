// How the service is put together: its configuration, and the peers it declares calling.
import { CatalogService } from "@thinmesh/contracts/shop/catalog/v1/catalog_pb.js";
import { ConfigError, startService } from "@thinmesh/platform";
import { createTestIssuer, type TestIssuer } from "@thinmesh/platform/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createCatalogClient, peerClient } from "../src/catalog.js";
import { peers } from "../src/peers.js";
import { orderService } from "../src/service.js";

describe("peers", () => {
  it("declares GetProducts on the catalog as the only RPC order calls", () => {
    expect(Object.keys(peers)).toEqual(["catalog"]);
    expect(peers.catalog.service).toBe(CatalogService);
    expect(peers.catalog.methods).toEqual(["getProducts"]);
    for (const method of peers.catalog.methods)
      expect(CatalogService.method).toHaveProperty(method);
  });

  it("builds clients that expose only the declared methods", () => {
    const client = createCatalogClient("http://127.0.0.1:9");
    expect(Object.keys(client)).toEqual(["getProducts"]);
    // @ts-expect-error an RPC not declared in peers.ts is not callable (typecheck fails if it is)
    expect(client.listProducts).toBeUndefined();
    expect(() =>
      peerClient({ service: CatalogService, methods: ["noSuchMethod"] }, "http://127.0.0.1:9"),
    ).toThrow(/no method "noSuchMethod"/);
  });
});

describe("configuration", () => {
  let issuer: TestIssuer;
  beforeAll(async () => {
    issuer = await createTestIssuer();
  });
  afterAll(async () => {
    await issuer?.close();
  });

  const env = () => ({
    PORT: "0",
    HOST: "127.0.0.1",
    LOG_LEVEL: "silent",
    AUTH_JWKS_URL: issuer.jwksUrl,
    CATALOG_URL: "http://127.0.0.1:9",
    PAYMENT_URL: "http://127.0.0.1:9",
  });

  async function configError(overrides: Record<string, string | undefined>): Promise<ConfigError> {
    const error = await startService(orderService, { ...env(), ...overrides }).then(
      async (service) => {
        await service.stop();
        return undefined;
      },
      (e: unknown) => e,
    );
    if (error instanceof ConfigError) return error;
    throw new Error(`expected a ConfigError, got ${String(error)}`);
  }

  it("requires CATALOG_URL as an http(s) URL", async () => {
    expect((await configError({ CATALOG_URL: undefined })).message).toMatch(/CATALOG_URL/);
    expect((await configError({ CATALOG_URL: "catalog:8080" })).message).toMatch(/CATALOG_URL/);
  });

  it("requires AUTH_JWKS_URL", async () => {
    expect((await configError({ AUTH_JWKS_URL: undefined })).message).toMatch(/AUTH_JWKS_URL/);
  });

  it("requires PAYMENT_URL for the relay's PaymentRequested subscriber", async () => {
    expect((await configError({ PAYMENT_URL: undefined })).message).toMatch(/PAYMENT_URL/);
  });
});
