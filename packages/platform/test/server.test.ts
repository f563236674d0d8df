import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { Code, createClient, type Transport } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import { MoneySchema } from "@thinmesh/contracts/shop/common/v1/money_pb.js";
import {
  type DeliverRequest,
  DeliverRequestSchema,
  EventSinkService,
} from "@thinmesh/contracts/shop/events/v1/events_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type RunningService, startService } from "../src/index.js";
import {
  buildEventEnvelope,
  createTestDatabase,
  rpcError,
  type TestDatabase,
  testEnv,
} from "../src/testing/index.js";
import { observed, sinkService } from "./fixtures/sink-service.js";

/** A Deliver request carrying an event of any `type` (its data is a Money). */
function event(type = "test.ping"): DeliverRequest {
  const money = { currencyCode: "EUR", amountMinor: 1n };
  return create(DeliverRequestSchema, {
    events: [buildEventEnvelope(MoneySchema, money, { source: "test", type })],
  });
}

let database: TestDatabase;
let service: RunningService;

beforeAll(async () => {
  database = await createTestDatabase("platform_server");
  service = await startService(sinkService, testEnv(database, { MAX_REQUEST_BYTES: "4096" }));
  await service.ready;
});
afterAll(async () => {
  await service?.stop();
  await database?.drop();
});

describe("one port", () => {
  const transports: [string, () => Transport][] = [
    [
      "Connect over HTTP/1.1",
      () => createConnectTransport({ baseUrl: service.url, httpVersion: "1.1" }),
    ],
    ["Connect over h2c", () => createConnectTransport({ baseUrl: service.url, httpVersion: "2" })],
    ["gRPC over h2c", () => createGrpcTransport({ baseUrl: service.url })],
    [
      "gRPC-Web over HTTP/1.1",
      () => createGrpcWebTransport({ baseUrl: service.url, httpVersion: "1.1" }),
    ],
  ];
  it.each(transports)("serves %s", async (_name, transport) => {
    const client = createClient(EventSinkService, transport());
    const request = event();
    expect((await client.deliver(request)).results).toMatchObject([{ duplicate: false }]);
    expect((await client.deliver(request)).results).toMatchObject([{ duplicate: true }]);
  });

  it("serves plain routes next to RPCs", async () => {
    expect(await (await fetch(`${service.url}/healthz`)).json()).toEqual({ status: "ok" });
    expect(await (await fetch(`${service.url}/readyz`)).json()).toEqual({ status: "ready" });
    const metrics = await (await fetch(`${service.url}/metrics`)).text();
    expect(metrics).toContain("rpc_server_handled_total");
    const missing = await fetch(`${service.url}/nope`);
    expect(missing.status).toBe(404);
  });

  it("answers curl-style Connect JSON", async () => {
    const id = randomUUID();
    const response = await fetch(`${service.url}/shop.events.v1.EventSinkService/Deliver`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        events: [
          {
            id,
            source: "curl",
            type: "test.curl",
            time: new Date().toISOString(),
            data: {
              "@type": "type.googleapis.com/shop.common.v1.Money",
              currencyCode: "EUR",
              amountMinor: "5",
            },
          },
        ],
      }),
    });
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ results: [{ eventId: id }] });
  });
});

describe("bad input", () => {
  const post = (body: string, contentType = "application/json") =>
    fetch(`${service.url}/shop.events.v1.EventSinkService/Deliver`, {
      method: "POST",
      headers: { "content-type": contentType },
      body,
    });

  it("rejects malformed JSON with invalid_argument", async () => {
    const response = await post("{not json");
    expect(response.status).toBe(400);
    expect(await response.json()).toMatchObject({ code: "invalid_argument" });
  });

  it("rejects wrong types with invalid_argument naming the field", async () => {
    const response = await post(JSON.stringify({ event: { id: 42 } }));
    expect(response.status).toBe(400);
    const body = (await response.json()) as { code: string; message: string };
    expect(body.code).toBe("invalid_argument");
    expect(body.message).toMatch(/id/);
  });

  it("rejects rule violations with the field paths, and writes nothing", async () => {
    const client = createClient(
      EventSinkService,
      createConnectTransport({ baseUrl: service.url, httpVersion: "1.1" }),
    );
    const bad = event();
    bad.events[0]!.id = "not-a-uuid";
    bad.events[0]!.source = "";
    const error = await rpcError(client.deliver(bad));
    expect(error.code).toBe(Code.InvalidArgument);
    expect(error.message).toMatch(/events\[0\]\.id: must be a valid UUID/);
    expect(error.message).toMatch(/events\[0\]\.source/);
    const missing = await rpcError(client.deliver(create(DeliverRequestSchema, {})));
    expect(missing.code).toBe(Code.InvalidArgument);
    expect(missing.message).toMatch(/events: must contain at least 1 item/);
  });

  it("rejects oversized bodies with resource_exhausted", async () => {
    const big = event();
    big.events[0]!.subject = "x".repeat(8000);
    const client = createClient(
      EventSinkService,
      createConnectTransport({ baseUrl: service.url, httpVersion: "1.1" }),
    );
    const error = await rpcError(client.deliver(big));
    expect(error.code).toBe(Code.ResourceExhausted);
  });

  it("hides unexpected errors behind internal", async () => {
    const client = createClient(
      EventSinkService,
      createConnectTransport({ baseUrl: service.url, httpVersion: "1.1" }),
    );
    const error = await rpcError(client.deliver(event("test.crash")));
    expect(error.code).toBe(Code.Internal);
    expect(error.message).not.toContain("secret");
  });
});

describe("trace context", () => {
  it("forwards the caller's trace headers on outgoing calls", async () => {
    const front = await startService(sinkService, testEnv(database, { PEER_URL: service.url }));
    try {
      await front.ready;
      const client = createClient(
        EventSinkService,
        createConnectTransport({ baseUrl: front.url, httpVersion: "1.1" }),
      );
      const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
      observed.headers.length = 0;
      await client.deliver(event("test.forward"), {
        headers: {
          traceparent,
          "x-request-id": "req-123",
          "x-b3-traceid": "0af7651916cd43dd8448eb211c80319c",
          "x-b3-sampled": "1",
        },
      });
      expect(observed.headers).toHaveLength(2);
      for (const seen of observed.headers) {
        expect(seen).toMatchObject({ traceparent, "x-request-id": "req-123", "x-b3-sampled": "1" });
      }
    } finally {
      await front.stop();
    }
  });

  it("starts a trace when the caller sent none", async () => {
    observed.headers.length = 0;
    const client = createClient(
      EventSinkService,
      createConnectTransport({ baseUrl: service.url, httpVersion: "1.1" }),
    );
    await client.deliver(event());
    expect(observed.headers[0]?.traceparent).toMatch(/^00-[\da-f]{32}-[\da-f]{16}-01$/);
    expect(observed.headers[0]?.["x-request-id"]).toBeTruthy();
  });
});

describe("shutdown", () => {
  it("finishes in-flight requests, then refuses new connections", async () => {
    const db = await createTestDatabase("platform_shutdown");
    const doomed = await startService(sinkService, testEnv(db));
    try {
      await doomed.ready;
      const client = createClient(
        EventSinkService,
        createConnectTransport({ baseUrl: doomed.url, httpVersion: "1.1" }),
      );
      const slow = client.deliver(event("test.slow"));
      await new Promise((r) => setTimeout(r, 100));
      const stopped = doomed.stop();
      await expect(slow).resolves.toMatchObject({ results: [{ duplicate: false }] });
      await stopped;
      await expect(fetch(`${doomed.url}/healthz`)).rejects.toThrow();
    } finally {
      await doomed.stop();
      await db.drop();
    }
  });
});
