import { describe, expect, it } from "vitest";
import { retryPolicy } from "../../src/mesh/retry.js";
import { routeFor } from "../../src/mesh/routes.js";
import { configFrom, headers, repoConfig, seeded, variantConfig } from "./support.js";

const deliver = (values: Record<string, string> = {}) => ({
  path: "/shop.events.v1.EventSinkService/Deliver?x=1",
  method: "POST",
  header: headers(values),
});

describe("routeFor", () => {
  it("takes the mesh VirtualService for a short name or an FQDN", () => {
    const config = repoConfig();
    for (const host of ["payment", "payment.shop.svc.cluster.local"]) {
      const route = routeFor(config, host, deliver())!;
      expect(route).toMatchObject({
        name: "payment",
        virtualService: "payment",
        destination: { host: "payment", subset: "v1", port: 8080 },
        timeoutMs: 10_000,
      });
      expect(route.retry.attempts).toBe(2);
      expect(route.retry.perTryTimeoutMs).toBe(3000);
    }
    expect(routeFor(config, "payment.other.svc.cluster.local", deliver())).toBeUndefined();
  });

  it("gives Istio's default route where no VirtualService names the host", () => {
    const config = configFrom("");
    expect(routeFor(config, "catalog", deliver())).toEqual({
      destination: { host: "catalog" },
      retry: retryPolicy(undefined),
    });
  });

  it("splits by weight: 90/10 within tolerance over 1,000 requests", () => {
    const config = variantConfig("payment-90-10.yaml");
    const random = seeded(3);
    let v2 = 0;
    for (let i = 0; i < 1000; i++) {
      if (routeFor(config, "payment", deliver(), random)?.destination.subset === "v2") v2++;
    }
    expect(v2).toBeGreaterThan(70);
    expect(v2).toBeLessThan(130);
    expect(
      routeFor(variantConfig("payment-0-100.yaml"), "payment", deliver())?.destination.subset,
    ).toBe("v2");
  });

  it("picks in proportion to relative weights (1 and 3: a quarter and three quarters)", () => {
    const config = configFrom(`
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: payment, namespace: shop }
spec:
  hosts: [payment]
  http:
    - route:
        - { destination: { host: payment }, weight: 1 }
        - { destination: { host: order }, weight: 3 }
`);
    const random = seeded(5);
    let order = 0;
    for (let i = 0; i < 1000; i++) {
      if (routeFor(config, "payment", deliver(), random)?.destination.host === "order") order++;
    }
    expect(order).toBeGreaterThan(700);
    expect(order).toBeLessThan(800);
  });

  it("matches headers in order: the canary header route first", () => {
    const config = variantConfig("payment-header-canary.yaml");
    expect(routeFor(config, "payment", deliver({ "x-canary": "true" }))).toMatchObject({
      name: "payment-canary-header",
      destination: { subset: "v2" },
    });
    expect(routeFor(config, "payment", deliver({ "x-canary": "yes" }))?.name).toBe("payment");
  });

  it("matches uri, method and regex (anchored), without the query; no match → undefined (404 NR)", () => {
    const config = configFrom(`
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: catalog, namespace: shop }
spec:
  hosts: [catalog]
  http:
    - name: reads
      match: [{ uri: { regex: "/shop\\\\.catalog\\\\.v1\\\\.CatalogService/(Get|List)Products?" }, method: { exact: POST } }]
      route: [{ destination: { host: catalog } }]
      timeout: 1s
    - name: jwks
      match: [{ uri: { prefix: /.well-known/ } }]
      route: [{ destination: { host: catalog } }]
      retries: { attempts: 0 }
`);
    const request = (path: string, method = "POST") => ({ path, method, header: headers() });
    expect(
      routeFor(config, "catalog", request("/shop.catalog.v1.CatalogService/GetProduct?a=b")),
    ).toMatchObject({
      name: "reads",
      timeoutMs: 1000,
    });
    expect(
      routeFor(config, "catalog", request("/shop.catalog.v1.CatalogService/GetProduct", "GET")),
    ).toBeUndefined();
    expect(
      routeFor(config, "catalog", request("/x/shop.catalog.v1.CatalogService/GetProduct")),
    ).toBeUndefined();
    expect(
      routeFor(config, "catalog", request("/.well-known/jwks.json", "GET"))?.retry.attempts,
    ).toBe(0);
  });
});
