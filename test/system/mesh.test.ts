// The mesh's policies acting on the real shop: the four services as processes behind their
// sidecars (mesh/local), on the real Postgres, configured by a copy of mesh/istio that the
// test edits while the shop runs, as a developer would.
import { randomBytes, randomUUID } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { CatalogService } from "@thinmesh/contracts/shop/catalog/v1/catalog_pb.js";
import { EventSinkService } from "@thinmesh/contracts/shop/events/v1/events_pb.js";
import { StockReservedSchema } from "@thinmesh/contracts/shop/events/v1/saga_pb.js";
import { OrderService, OrderStatus } from "@thinmesh/contracts/shop/order/v1/order_pb.js";
import { buildEventEnvelope, eventually, testPostgresUrl } from "@thinmesh/platform/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { main as canary, localShopWarning } from "../../mesh/canary/canary.js";
import type { LocalShop } from "../../mesh/local/src/shop.js";
import type { AccessRecord } from "../../mesh/local/src/sidecar/telemetry.js";
import { startTestShop, type TestShop } from "./local-shop.js";

const serverUrl = await testPostgresUrl();
const records: AccessRecord[] = [];
const configEvents: ({ ok: true; files: string[] } | { ok: false; message: string })[] = [];
let testShop: TestShop;
let shop: LocalShop;
let meshDir: string;
let customer: string;

const transport = (baseUrl: string) => createConnectTransport({ baseUrl, httpVersion: "1.1" });
const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });
const rpcError = async (call: Promise<unknown>) => {
  try {
    await call;
  } catch (error) {
    return ConnectError.from(error);
  }
  throw new Error("the call succeeded");
};
const silent = { out: { write: () => true }, err: { write: () => true } };

describe.skipIf(!serverUrl)("the mesh's policies on the running shop", () => {
  beforeAll(async () => {
    testShop = await startTestShop("mesh", serverUrl!, {
      editableMesh: true,
      events: { line: () => {}, event: () => {} },
      onRecord: (record) => records.push(record),
      onConfig: (event) => configEvents.push(event),
    });
    ({ shop, meshDir, customer } = testShop);
  }, 120_000);

  afterAll(() => testShop?.stop());

  it("refuses plaintext on every inbound side (PeerAuthentication STRICT)", async () => {
    const endpoints = (await (await fetch(`${shop.adminUrl}/endpoints`)).json()) as {
      id: string;
      inbound: string;
    }[];
    expect(endpoints.map((e) => e.id).sort()).toEqual(shop.instances.map((i) => i.id).sort());
    for (const { inbound } of endpoints) {
      await expect(
        fetch(`http://${inbound}/shop.order.v1.OrderService/GetOrder`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: "{}",
        }),
      ).rejects.toThrow();
    }
  });

  it("answers 403 RBAC: access denied to an identity the AuthorizationPolicy does not name", async () => {
    // auth may not deliver events to order; its sidecar calls as cluster.local/ns/shop/sa/auth.
    const sink = createClient(EventSinkService, transport(shop.peerUrl("auth", "order")));
    const error = await rpcError(sink.deliver({ events: [] }));
    expect(error.code).toBe(Code.PermissionDenied);
    // Envoy's local reply, as plain text: only a gRPC caller gets it as grpc-message.
    const raw = await fetch(
      `${shop.peerUrl("auth", "order")}/shop.events.v1.EventSinkService/Deliver`,
      {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: '{"events":[]}',
      },
    );
    expect([raw.status, await raw.text()]).toEqual([403, "RBAC: access denied"]);
    // Denied by order's inbound side, which saw auth's certificate.
    expect(records.filter((r) => r.reporter === "destination").at(-1)).toMatchObject({
      destination_workload: "order",
      source_principal: "cluster.local/ns/shop/sa/auth",
      response_code: 403,
    });
    // A gRPC caller gets Envoy's gRPC local reply: PERMISSION_DENIED with the same message.
    const grpcSink = createClient(
      EventSinkService,
      createGrpcTransport({ baseUrl: shop.peerUrl("auth", "order") }),
    );
    const grpcError = await rpcError(grpcSink.deliver({ events: [] }));
    expect([grpcError.code, grpcError.rawMessage]).toEqual([
      Code.PermissionDenied,
      "RBAC: access denied",
    ]);
    // Its record: HTTP 200 carrying gRPC status 7, as Envoy logs a gRPC local reply.
    expect(records.filter((r) => r.reporter === "destination").at(-1)).toMatchObject({
      response_code: 200,
      grpc_status: "7",
    });
  });

  it("refuses an event from an identity that does not produce its type (a forged StockReserved)", async () => {
    // payment may deliver to order (PaymentCaptured), but StockReserved is catalog's.
    const sink = createClient(EventSinkService, transport(shop.peerUrl("payment", "order")));
    const forged = buildEventEnvelope(
      StockReservedSchema,
      { orderId: randomUUID() },
      { source: "catalog" },
    );
    const { results } = await sink.deliver({ events: [forged] });
    expect(results).toMatchObject([
      {
        eventId: forged.id,
        error: {
          code: "permission_denied",
          message:
            "shop.events.v1.StockReserved events are accepted only from cluster.local/ns/shop/sa/catalog, not from cluster.local/ns/shop/sa/payment",
        },
      },
    ]);
  });

  it("serves Istio's metrics and the access records of one trace on the admin port", async () => {
    const traceId = randomBytes(16).toString("hex");
    const response = await fetch(`${shop.ingressUrl}/shop.catalog.v1.CatalogService/ListProducts`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        traceparent: `00-${traceId}-${randomBytes(8).toString("hex")}-01`,
      },
      body: "{}",
    });
    expect(response.status).toBe(200);
    await response.text();
    const hops = async () =>
      (await (await fetch(`${shop.adminUrl}/access?trace=${traceId}`)).json()) as AccessRecord[];
    // The ingress's record and catalog's inbound side's, both of this trace only.
    await eventually(async () => expect(await hops()).toHaveLength(2), 2_000);
    const recorded = await hops();
    const edge = recorded.find((r) => r.reporter === "source")!;
    const inbound = recorded.find((r) => r.reporter === "destination")!;
    expect(inbound).toMatchObject({
      reporter: "destination",
      trace_id: traceId,
      method: "POST",
      path: "/shop.catalog.v1.CatalogService/ListProducts",
      response_code: 200,
      response_flags: "-",
      source_workload: "istio-ingressgateway",
      source_canonical_service: "istio-ingressgateway",
      source_principal: "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account",
      destination_service: "catalog.shop.svc.cluster.local",
      destination_workload: "catalog",
      destination_canonical_service: "catalog",
      destination_version: "v1",
      connection_security_policy: "mutual_tls",
      protocol: "HTTP/2",
    });
    expect(edge).toMatchObject({
      reporter: "source",
      destination_service: "catalog.shop.svc.cluster.local",
      destination_workload: "catalog",
      // A caller's side does not know the connection's security (Istio's client metrics).
      connection_security_policy: "unknown",
      trace_id: traceId,
      request_id: inbound.request_id,
      span_id: inbound.parent_span_id, // catalog's inbound side's span is the gateway's child
      upstream_cluster: "outbound|8080||catalog.shop.svc.cluster.local",
      upstream_host: expect.stringMatching(/^[\d.]+:\d+$/),
    });
    for (const key of ["start_time", "protocol", "duration", "authority", "bytes_sent"]) {
      expect(edge).toHaveProperty(key);
    }

    // Istio's standard metric with its labels: this edge, as catalog's inbound side reports it.
    const metrics = await (await fetch(`${shop.adminUrl}/stats/prometheus`)).text();
    const series = metrics
      .split("\n")
      .filter((line) => line.startsWith("istio_requests_total{"))
      .map((line) => {
        const [, labels, value] = /^istio_requests_total\{(.*)\} (\d+)$/.exec(line)!;
        return {
          labels: Object.fromEntries(
            [...labels!.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]),
          ),
          value: Number(value),
        };
      });
    const edgeSeries = series.find(
      ({ labels }) =>
        labels.reporter === "destination" &&
        labels.source_workload === "istio-ingressgateway" &&
        labels.destination_workload === "catalog" &&
        labels.response_code === "200",
    );
    expect(edgeSeries?.labels).toMatchObject({
      source_workload_namespace: "istio-system",
      source_principal:
        "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account",
      source_app: "istio-ingressgateway",
      source_version: "unknown",
      source_canonical_service: "istio-ingressgateway",
      source_canonical_revision: "latest",
      source_cluster: "Kubernetes",
      destination_workload_namespace: "shop",
      destination_app: "catalog",
      destination_version: "v1",
      destination_service: "catalog.shop.svc.cluster.local",
      destination_service_name: "catalog",
      destination_service_namespace: "shop",
      destination_canonical_service: "catalog",
      destination_canonical_revision: "v1",
      destination_cluster: "Kubernetes",
      destination_principal: "spiffe://cluster.local/ns/shop/sa/catalog",
      response_flags: "-",
      connection_security_policy: "mutual_tls",
    });
    expect(edgeSeries!.value).toBeGreaterThanOrEqual(1);
    expect(metrics).toContain("# TYPE istio_request_duration_milliseconds histogram");
  });

  it("answers a malformed token at the edge 401 with Envoy's message (RequestAuthentication)", async () => {
    const response = await fetch(`${shop.ingressUrl}/shop.order.v1.OrderService/ListOrders`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: "Bearer not-a-jwt" },
      body: "{}",
    });
    expect(response.status).toBe(401);
    expect(await response.text()).toBe(
      "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
    );
    // Over gRPC: UNAUTHENTICATED, the message as grpc-message.
    const grpcOrders = createClient(
      OrderService,
      createGrpcTransport({ baseUrl: shop.ingressUrl }),
    );
    const error = await rpcError(grpcOrders.listOrders({}, bearer("not-a-jwt")));
    expect([error.code, error.rawMessage]).toEqual([
      Code.Unauthenticated,
      "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
    ]);
  });

  it("moves the payments to v2 when the canary CLI edits the running shop's configuration", async () => {
    const { admin } = testShop;
    const { product } = await createClient(
      CatalogService,
      transport(shop.ingressUrl),
    ).createProduct(
      {
        sku: `MESH-${randomBytes(3).toString("hex").toUpperCase()}`,
        name: "Canary test",
        price: { currencyCode: "EUR", amountMinor: 500n },
        initialStock: 100,
      },
      bearer(admin),
    );
    const orders = createClient(OrderService, transport(shop.ingressUrl));
    // The versions of payment that order's sidecar sent the PaymentRequested deliveries of
    // `count` new orders to (a relay may carry several events in one call), and payment's
    // inbound records of them.
    const paymentVersions = async (count: number) => {
      const from = records.length;
      const ids: string[] = [];
      for (let i = 0; i < count; i++) {
        const { order } = await orders.placeOrder(
          {
            idempotencyKey: randomUUID(),
            items: [{ productId: product!.id, quantity: 1 }],
            paymentToken: "tok_test_visa",
          },
          bearer(customer),
        );
        ids.push(order!.id);
      }
      await eventually(async () => {
        for (const id of ids) {
          const { order } = await orders.getOrder({ id }, bearer(customer));
          expect(order!.status).toBe(OrderStatus.CONFIRMED);
        }
      }, 30_000);
      const calls = records
        .slice(from)
        .filter(
          (r) => r.source_workload === "order" && r.destination_canonical_service === "payment",
        );
      const versions = calls
        .filter((r) => r.reporter === "source")
        .map((r) => r.destination_version);
      expect(versions.length).toBeGreaterThan(0);
      const inbound = calls.filter((r) => r.reporter === "destination");
      expect(inbound.length).toBe(versions.length);
      // Each version is its own workload (its Deployment), one canonical service; the inbound
      // side knows its caller's version by the caller's certificate (Istio: peer metadata).
      for (const r of inbound) {
        expect(r).toMatchObject({
          source_version: "v1",
          source_canonical_revision: "v1",
          destination_workload: r.destination_version === "v2" ? "payment-v2" : "payment",
        });
      }
      return versions;
    };

    expect(new Set(await paymentVersions(3))).toEqual(new Set(["v1"]));
    const pushes = configEvents.length;
    // On Postgres every instance runs, payment v2 included: nothing to warn about.
    expect(await localShopWarning("payment", 100, shop.adminUrl)).toBeUndefined();
    expect(canary(["payment", "promote", "--dir", meshDir], silent)).toBe(0);
    // Pushed within 2 s, without a restart.
    await eventually(() => expect(configEvents.length).toBeGreaterThan(pushes), 2_000);
    expect(configEvents.at(-1)).toMatchObject({ ok: true });
    expect(new Set(await paymentVersions(3))).toEqual(new Set(["v2"]));
    expect(records.some((r) => r.upstream_cluster?.startsWith("outbound|8080|v2|payment."))).toBe(
      true,
    );
  });
  it("limits the auth RPCs per client at the ingress: 429 local_rate_limited, flag RL (the EnvoyFilter)", async () => {
    // The committed bucket holds 100 calls per client; a live edit makes it 3 for this test.
    const file = join(meshDir, "rate-limit.yaml");
    const committed = readFileSync(file, "utf8");
    const pushes = configEvents.length;
    writeFileSync(
      file,
      committed.replace(
        /max_tokens: 100\n(\s+)tokens_per_fill: 20\n(\s+)fill_interval: 10s/,
        "max_tokens: 3\n$1tokens_per_fill: 1\n$2fill_interval: 60s",
      ),
    );
    await eventually(() => expect(configEvents.length).toBeGreaterThan(pushes), 2_000);
    expect(configEvents.at(-1)).toMatchObject({ ok: true });
    const login = () =>
      fetch(`${shop.ingressUrl}/shop.auth.v1.AuthService/Login`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ email: "nobody@example.com", password: "wrong password" }),
      });
    const answers: number[] = [];
    let limited: Response | undefined;
    for (let i = 0; i < 5; i++) {
      const response = await login();
      answers.push(response.status);
      if (response.status === 429 && response.headers.get("x-local-rate-limit")) limited = response;
      else await response.text();
    }
    expect(answers.slice(0, 3)).not.toContain(429);
    expect(limited).toBeDefined();
    expect(await limited!.text()).toBe("local_rate_limited");
    expect(
      records.some(
        (r) =>
          r.source_workload === "istio-ingressgateway" &&
          r.path === "/shop.auth.v1.AuthService/Login" &&
          r.response_code === 429 &&
          r.response_flags === "RL",
      ),
    ).toBe(true);
    writeFileSync(file, committed);
  });
});
