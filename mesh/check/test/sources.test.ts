import { describe, expect, it } from "vitest";
import { edgeKey, expectedEdges } from "../src/index.js";
import { fallbackPeerCalls } from "../src/sources.js";
import { built, repoFacts } from "./support.js";

describe("what the repository declares", () => {
  it("reads the protos' services and methods", () => {
    const names = repoFacts().protos.map((s) => s.fullName);
    expect(names).toEqual(
      expect.arrayContaining([
        "shop.auth.v1.AuthService",
        "shop.catalog.v1.CatalogService",
        "shop.order.v1.OrderService",
        "shop.payment.v1.PaymentService",
        "shop.events.v1.EventSinkService",
      ]),
    );
    expect(repoFacts().protos.find((s) => s.name === "OrderService")?.methods).toEqual([
      "PlaceOrder",
      "GetOrder",
      "ListOrders",
    ]);
  });

  it("knows a producer for every subscribed event", () => {
    for (const type of repoFacts().subscriptions.keys()) {
      expect(repoFacts().producers.get(type), type).toBeDefined();
    }
  });

  it("declares in config/subscriptions.yaml exactly the producers the services' code names", () => {
    expect(repoFacts().declaredProducers).toEqual(repoFacts().producers);
    const facts = repoFacts();
    const wrong = {
      ...facts,
      declaredProducers: new Map([
        ...facts.declaredProducers,
        ["shop.events.v1.PaymentCaptured", "order"],
      ]),
    };
    expect(expectedEdges(built("dev"), wrong).findings.map((f) => f.message)).toEqual([
      "config/subscriptions.yaml says order produces shop.events.v1.PaymentCaptured, but payment does",
    ]);
  });

  it("reads order's peer RPCs from services/order/src/peers.ts (the documented fallback agrees)", () => {
    const fromFile = repoFacts().peerCalls.filter((c) => c.caller === "order");
    expect(fromFile).toEqual(fallbackPeerCalls.filter((c) => c.caller === "order"));
  });

  it("knows which file declares each manifest, and the namespace it declares there", () => {
    const { manifests } = repoFacts();
    expect(manifests.get("EnvoyFilter/auth-rate-limit")).toEqual({
      file: "mesh/istio/rate-limit.yaml",
      namespace: "istio-system",
    });
    expect(manifests.get("Deployment/auth")).toEqual({ file: "kustomize/base/auth.yaml" });
    expect(manifests.get("VirtualService/payment")?.file).toBe("mesh/istio/payment.yaml");
  });

  it("derives the whole call graph of dev", () => {
    const { edges, findings } = expectedEdges(built("dev"), repoFacts());
    expect(findings).toEqual([]);
    expect(edges.map(edgeKey).sort()).toEqual(
      [
        "ingress → auth /shop.auth.v1.AuthService/Register",
        "ingress → auth /shop.auth.v1.AuthService/Login",
        "ingress → auth /shop.auth.v1.AuthService/Refresh",
        "ingress → auth /.well-known/*",
        "ingress → catalog /shop.catalog.v1.CatalogService/ListProducts",
        "ingress → catalog /shop.catalog.v1.CatalogService/GetProduct",
        "ingress → catalog /shop.catalog.v1.CatalogService/CreateProduct",
        "ingress → catalog /shop.catalog.v1.CatalogService/SetStock",
        "ingress → order /shop.order.v1.OrderService/PlaceOrder",
        "ingress → order /shop.order.v1.OrderService/GetOrder",
        "ingress → order /shop.order.v1.OrderService/ListOrders",
        "order → catalog /shop.catalog.v1.CatalogService/GetProducts",
        "order → catalog /shop.events.v1.EventSinkService/Deliver",
        "catalog → order /shop.events.v1.EventSinkService/Deliver",
        "order → payment /shop.events.v1.EventSinkService/Deliver",
        "payment → order /shop.events.v1.EventSinkService/Deliver",
        "catalog → auth /.well-known/jwks.json",
        "order → auth /.well-known/jwks.json",
        "payment → auth /.well-known/jwks.json",
        "auth → auth-postgres port 5432",
        "catalog → catalog-postgres port 5432",
        "order → order-postgres port 5432",
        "payment → payment-postgres port 5432",
      ].sort(),
    );
  });
});
