import { request as httpRequest } from "node:http";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import {
  connectNodeAdapter,
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import { CatalogService, ProductSchema } from "@thinmesh/contracts/shop/catalog/v1/catalog_pb.js";
import { createDualProtocolServer, type DualProtocolServer } from "@thinmesh/platform";
import { rpcError } from "@thinmesh/platform/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { HttpRoute, LocalRateLimit } from "../src/mesh/index.js";
import type { AccessRecord } from "../src/sidecar/telemetry.js";
import { testIngress } from "./gateway-support.js";
import { repoConfig } from "./mesh/support.js";

const seen: { path: string; headers: Record<string, string | string[] | undefined> }[] = [];
function fakeCatalog(): DualProtocolServer {
  return createDualProtocolServer(
    connectNodeAdapter({
      routes(router) {
        router.service(CatalogService, {
          async listProducts(_request, context) {
            seen.push({ path: "ListProducts", headers: Object.fromEntries(context.requestHeader) });
            return { products: [create(ProductSchema, { sku: "MUG-1", name: "Mug" })] };
          },
          async getProduct(request) {
            throw new ConnectError(`no product with id "${request.id}"`, Code.NotFound);
          },
        });
      },
    }) as Parameters<typeof createDualProtocolServer>[0],
  );
}

const routes: HttpRoute[] = [
  {
    name: "catalog",
    match: [{ uri: { prefix: "/shop.catalog.v1.CatalogService/" } }],
    route: [{ destination: { host: "catalog" } }],
  },
  {
    name: "down",
    match: [{ uri: { prefix: "/down/" } }],
    route: [{ destination: { host: "order" } }],
  },
  {
    name: "unknown",
    match: [{ uri: { prefix: "/nobody/" } }],
    route: [{ destination: { host: "nobody" } }],
  },
];

let catalog: DualProtocolServer;
let ingress: DualProtocolServer;
let ingressUrl: string;
const hops: AccessRecord[] = [];

beforeAll(async () => {
  catalog = fakeCatalog();
  const catalogPort = (await catalog.listen(0, "127.0.0.1")).port;
  const closed = createDualProtocolServer(() => {});
  const closedPort = (await closed.listen(0, "127.0.0.1")).port;
  await closed.close(0); // nothing listens there any more
  ingress = testIngress({
    routes,
    upstreams: {
      catalog: `http://127.0.0.1:${catalogPort}`,
      order: `http://127.0.0.1:${closedPort}`,
    },
    onRecord: (record) => hops.push(record),
  });
  ingressUrl = `http://127.0.0.1:${(await ingress.listen(0, "127.0.0.1")).port}`;
});
afterAll(async () => {
  await ingress?.close(1000);
  await catalog?.close(1000);
});

describe("the local ingress gateway", () => {
  it.each([
    [
      "Connect over HTTP/1.1",
      () => createConnectTransport({ baseUrl: ingressUrl, httpVersion: "1.1" }),
    ],
    ["Connect over h2c", () => createConnectTransport({ baseUrl: ingressUrl, httpVersion: "2" })],
    ["gRPC", () => createGrpcTransport({ baseUrl: ingressUrl })],
    ["gRPC-Web", () => createGrpcWebTransport({ baseUrl: ingressUrl, httpVersion: "1.1" })],
  ])("proxies %s, errors included", async (_name, transport) => {
    const client = createClient(CatalogService, transport());
    const { products } = await client.listProducts({});
    expect(products[0]?.sku).toBe("MUG-1");
    // A gRPC status travels in trailers: this fails unless the proxy forwards them.
    const error = await rpcError(client.getProduct({ id: "p-1" }));
    expect(error.code).toBe(Code.NotFound);
    expect(error.rawMessage).toBe('no product with id "p-1"');
  });

  it("adds x-request-id, continues the caller's trace under a span of its own, or starts one", async () => {
    seen.length = 0;
    hops.length = 0;
    const client = createClient(
      CatalogService,
      createConnectTransport({ baseUrl: ingressUrl, httpVersion: "1.1" }),
    );
    const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    await client.listProducts({}, { headers: { traceparent } });
    const continued = hops.at(-1)!;
    await client.listProducts({}, { headers: { "x-request-id": "mine" } });
    const started = hops.at(-1)!;
    expect(seen[0]?.headers["x-request-id"]).toMatch(/^[0-9a-f-]{36}$/);
    expect(seen[1]?.headers["x-request-id"]).toBe("mine");
    // The caller's trace and sampled flag; the gateway's span in between, as Envoy's is.
    expect(continued).toMatchObject({
      trace_id: "0af7651916cd43dd8448eb211c80319c",
      parent_span_id: "b7ad6b7169203331",
      span_id: expect.stringMatching(/^[0-9a-f]{16}$/),
    });
    expect(seen[0]?.headers.traceparent).toBe(
      `00-0af7651916cd43dd8448eb211c80319c-${continued.span_id}-01`,
    );
    // Without the caller's trace the gateway starts one (the mesh's default sampling, 100 %)
    // as its root span; the services continue it.
    expect(started).toMatchObject({ parent_span_id: null });
    expect(seen[1]?.headers.traceparent).toBe(`00-${started.trace_id}-${started.span_id}-01`);
  });

  it("answers 404 where no route matches, as Envoy does", async () => {
    const response = await fetch(`${ingressUrl}/shop.events.v1.EventSinkService/Deliver`, {
      method: "POST",
    });
    expect(response.status).toBe(404);
    expect(hops.at(-1)).toMatchObject({
      response_code: 404,
      response_flags: "NR",
      destination_workload: null,
    });
  });

  it("retries a refused connection twice, then answers 503", async () => {
    const response = await fetch(`${ingressUrl}/down/x`, { method: "POST", body: "{}" });
    expect(response.status).toBe(503);
    // Envoy's words after retries, and its flags in the order set (URX at the retry decision).
    expect(await response.text()).toBe(
      "upstream connect error or disconnect/reset before headers. retried and the latest reset reason: remote connection failure, transport failure reason: delayed connect error: Connection refused",
    );
    expect(hops.at(-1)).toMatchObject({
      response_code: 503,
      response_flags: "URX,UF",
      response_code_details:
        "upstream_reset_before_response_started{remote_connection_failure|delayed_connect_error:_Connection_refused}",
      upstream_transport_failure_reason: "delayed connect error: Connection refused",
      attempts: 3,
      destination_workload: "order",
    });
  });

  it("answers 503 for a destination with no instance", async () => {
    const response = await fetch(`${ingressUrl}/nobody/x`, { method: "POST" });
    expect(response.status).toBe(503);
    expect(hops.at(-1)).toMatchObject({ response_flags: "UH" });
  });

  it("records every hop", () => {
    const ok = hops.find((h) => h.response_code === 200);
    expect(ok).toMatchObject({
      source_workload: "istio-ingressgateway",
      destination_workload: "catalog",
      route_name: "catalog",
      attempts: 1,
    });
    expect(ok?.duration).toBeGreaterThan(0);
  });
});

describe("the ingress's local rate limit", () => {
  it("keys a request_headers :authority descriptor on the authority the client sent", async () => {
    const limit = {
      ...repoConfig().rateLimits[0]!,
      routeName: "unknown",
      tokenBucket: { maxTokens: 1000, tokensPerFill: 1000, fillIntervalMs: 60_000 },
      descriptors: [
        {
          entries: [{ key: "authority", value: "shop.example:8080" }],
          tokenBucket: { maxTokens: 1, tokensPerFill: 1, fillIntervalMs: 60_000 },
        },
      ],
      rateLimits: [
        [{ request_headers: { header_name: ":authority", descriptor_key: "authority" } }],
      ],
    } as LocalRateLimit;
    const limited = testIngress({
      routes,
      upstreams: { catalog: `http://127.0.0.1:1` },
      onRecord: () => {},
      rateLimits: [limit],
    });
    const port = (await limited.listen(0, "127.0.0.1")).port;
    try {
      const status = (host: string) =>
        new Promise<number>((resolve, reject) => {
          const req = httpRequest(
            { port, host: "127.0.0.1", method: "POST", path: "/nobody/x", headers: { host } },
            (res) => {
              res.resume();
              resolve(res.statusCode ?? 0);
            },
          );
          req.on("error", reject);
          req.end();
        });
      expect(await status("shop.example:8080")).toBe(503); // the one token: on to no instance
      expect(await status("shop.example:8080")).toBe(429);
      expect(await status("other.example:8080")).toBe(503);
    } finally {
      await limited.close(1000);
    }
  });
});
