import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { loadIngress, MeshConfigError } from "../src/istio.js";
import { chooseRoute, workloadOf } from "../src/routing.js";

const repoMesh = fileURLToPath(new URL("../../istio", import.meta.url));
const fixture = (name: string) => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));
const request = (path: string, headers: Record<string, string> = {}) => ({
  path,
  method: "POST",
  header: (name: string) => headers[name],
});

describe("loading mesh/istio", () => {
  const config = loadIngress(repoMesh);

  it("takes the Gateway and the VirtualServices bound to it", () => {
    expect(config.gateway.metadata.name).toBe("shop-gateway");
    expect(config.routes.map((r) => r.name)).toEqual(["auth", "catalog", "order"]);
  });

  it("routes the public RPCs and leaves internal ones without a route", () => {
    const target = (path: string) => chooseRoute(config.routes, request(path))?.host;
    expect(target("/shop.auth.v1.AuthService/Login")).toBe("auth");
    expect(target("/.well-known/jwks.json")).toBe("auth");
    expect(target("/shop.catalog.v1.CatalogService/ListProducts")).toBe("catalog");
    expect(target("/shop.order.v1.OrderService/PlaceOrder")).toBe("order");
    expect(target("/shop.catalog.v1.CatalogService/GetProducts")).toBeUndefined();
    expect(target("/shop.events.v1.EventSinkService/Deliver")).toBeUndefined();
    expect(target("/shop.payment.v1.PaymentService/GetPayment")).toBeUndefined();
  });

  it("refuses a field it does not implement, naming the resource and the field", () => {
    expect(() => loadIngress(fixture("unimplemented"))).toThrowError(MeshConfigError);
    expect(() => loadIngress(fixture("unimplemented"))).toThrow(
      /VirtualService edge: spec\.http\.0\.mirror: not implemented/,
    );
  });

  it("refuses destinations whose weights add up to 0 (Istio 1.30 accepts any other total)", () => {
    expect(() => loadIngress(fixture("weights"))).toThrow(/total destination weight = 0/);
  });
});

describe("routing", () => {
  const routes = [
    {
      name: "canary",
      match: [{ headers: { "x-canary": { exact: "true" } }, uri: { prefix: "/a" } }],
      route: [{ destination: { host: "v2" } }],
    },
    {
      name: "regex",
      match: [{ uri: { regex: "/b/[0-9]+" } }],
      route: [{ destination: { host: "numbers" } }],
    },
    {
      name: "split",
      match: [{ uri: { prefix: "/a" } }, { uri: { exact: "/c" } }],
      route: [
        { destination: { host: "v1" }, weight: 90 },
        { destination: { host: "v2" }, weight: 10 },
      ],
    },
  ];

  it("takes the first matching route; match blocks are ORed, fields ANDed", () => {
    expect(chooseRoute(routes, request("/a/x", { "x-canary": "true" }))?.route.name).toBe("canary");
    expect(chooseRoute(routes, request("/a/x"))?.route.name).toBe("split");
    expect(chooseRoute(routes, request("/c"))?.route.name).toBe("split");
    expect(chooseRoute(routes, request("/c/d"))).toBeUndefined();
  });

  it("anchors regular expressions like RE2's full match", () => {
    expect(chooseRoute(routes, request("/b/42"))?.host).toBe("numbers");
    expect(chooseRoute(routes, request("/b/42/x"))).toBeUndefined();
  });

  it("splits by weight", () => {
    expect(chooseRoute(routes, request("/c"), () => 0.899)?.host).toBe("v1");
    expect(chooseRoute(routes, request("/c"), () => 0.9)?.host).toBe("v2");
    let v2 = 0;
    let seed = 1;
    const random = () => {
      seed = (seed * 16807) % 2147483647; // a seeded Lehmer generator: the same split every run
      return seed / 2147483647;
    };
    for (let i = 0; i < 10_000; i++)
      if (chooseRoute(routes, request("/c"), random)?.host === "v2") v2++;
    expect(v2 / 10_000).toBeGreaterThan(0.08);
    expect(v2 / 10_000).toBeLessThan(0.12);
  });

  it("resolves short and cluster host names in namespace shop only", () => {
    expect(workloadOf("auth")).toBe("auth");
    expect(workloadOf("auth.shop.svc.cluster.local")).toBe("auth");
    expect(workloadOf("auth.other.svc.cluster.local")).toBeUndefined();
  });
});
