// No client input produces a 5xx: bodies that do not decode and strings with NUL bytes are
// answered invalid_argument on every protocol, and nothing reaches the database.
import http2 from "node:http2";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { MoneySchema } from "@thinmesh/contracts/shop/common/v1/money_pb.js";
import {
  DeliverRequestSchema,
  EventSinkService,
} from "@thinmesh/contracts/shop/events/v1/events_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type RunningService, startService, toConnectError } from "../src/index.js";
import {
  buildEventEnvelope,
  createTestDatabase,
  type TestDatabase,
  testEnv,
} from "../src/testing/index.js";
import { deliveries, sinkService } from "./fixtures/sink-service.js";

let database: TestDatabase;
let service: RunningService;

beforeAll(async () => {
  database = await createTestDatabase("platform_bad_input");
  service = await startService(sinkService, testEnv(database));
  await service.ready;
});
afterAll(async () => {
  await service?.stop();
  await database?.drop();
});

const path = "/shop.events.v1.EventSinkService/Deliver";
// Field 1 (events, length-delimited) claiming 100 bytes that never come.
const undecodable = new Uint8Array([0x0a, 0x64, 0x01]);
/** gRPC's and gRPC-Web's framing: a flag byte and a 4-byte length before the message. */
const framed = (message: Uint8Array) => {
  const frame = new Uint8Array(5 + message.length);
  new DataView(frame.buffer).setUint32(1, message.length);
  frame.set(message, 5);
  return frame;
};

function deliverRequest(subject: string) {
  const money = { currencyCode: "EUR", amountMinor: 1n };
  const envelope = buildEventEnvelope(MoneySchema, money, { source: "test", type: "test.ping" });
  return create(DeliverRequestSchema, { events: [{ ...envelope, subject }] });
}

async function storedDeliveries() {
  return service.database.db.select().from(deliveries);
}

describe("a request body that does not decode", () => {
  it("is invalid_argument over Connect with binary protobuf (HTTP 400)", async () => {
    const response = await fetch(`${service.url}${path}`, {
      method: "POST",
      headers: { "content-type": "application/proto" },
      body: undecodable,
    });
    expect(response.status).toBe(400);
    const body = (await response.json()) as { code: string; message: string };
    expect(body.code).toBe("invalid_argument");
    expect(body.message).toMatch(/parse binary/);
  });

  it("is grpc-status 3 over gRPC", async () => {
    const session = http2.connect(service.url);
    try {
      const trailers = await new Promise<http2.IncomingHttpHeaders>((resolve, reject) => {
        const stream = session.request({
          ":method": "POST",
          ":path": path,
          "content-type": "application/grpc+proto",
          te: "trailers",
        });
        let headers: http2.IncomingHttpHeaders = {};
        stream.on("response", (h) => {
          headers = h;
        });
        stream.on("trailers", (t) => resolve({ ...headers, ...t }));
        stream.on("error", reject);
        stream.on("end", () => resolve(headers));
        stream.resume();
        stream.end(framed(undecodable));
      });
      expect(trailers["grpc-status"]).toBe(String(Code.InvalidArgument));
    } finally {
      session.close();
    }
  });

  it("is grpc-status 3 over gRPC-Web", async () => {
    const response = await fetch(`${service.url}${path}`, {
      method: "POST",
      headers: { "content-type": "application/grpc-web+proto" },
      body: framed(undecodable),
    });
    const bytes = new Uint8Array(await response.arrayBuffer());
    // The status is in the response headers (trailers-only) or in the final trailer frame.
    const trailer = response.headers.get("grpc-status") ?? new TextDecoder().decode(bytes);
    expect(trailer).toMatch(new RegExp(`^grpc-status: ?${Code.InvalidArgument}\\b|^3$`, "m"));
  });
});

describe("a string with a NUL byte", () => {
  it("is invalid_argument naming the field over Connect JSON, and stores nothing", async () => {
    const before = (await storedDeliveries()).length;
    const json = JSON.stringify({
      events: [
        {
          id: "0b7f3c57-5a8e-4a4e-9d43-2f1f4c0e8a11",
          source: "test",
          type: "test.ping",
          subject: "order\u0000 1",
          time: "2026-01-01T00:00:00Z",
          traceparent: "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01",
        },
      ],
    });
    const response = await fetch(`${service.url}${path}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: json,
    });
    expect(response.status).toBe(400);
    const body = (await response.json()) as { code: string; message: string };
    expect(body.code).toBe("invalid_argument");
    expect(body.message).toMatch(/events\[0\]\.subject: must not contain a NUL/);
    expect((await storedDeliveries()).length).toBe(before);
  });

  it.each([
    [
      "Connect binary over h2c",
      () => createConnectTransport({ baseUrl: service.url, httpVersion: "2" }),
    ],
    ["gRPC", () => createGrpcTransport({ baseUrl: service.url })],
  ])("is invalid_argument over %s", async (_name, transport) => {
    const client = createClient(EventSinkService, transport());
    const request = deliverRequest("subject-with-\u0000-inside");
    expect(toBinary(DeliverRequestSchema, request).length).toBeGreaterThan(0);
    const error = await client.deliver(request).then(
      () => undefined,
      (e: unknown) => ConnectError.from(e),
    );
    expect(error?.code).toBe(Code.InvalidArgument);
    expect(error?.rawMessage).toMatch(/events\[0\]\.subject: must not contain a NUL/);
  });

  it("is invalid_argument where one reaches the database anyway (SQLSTATE 22021)", async () => {
    const error = await service.database.db
      .insert(deliveries)
      .values({ eventId: "nul\u0000id", type: "t" })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(error).toBeDefined();
    const answer = toConnectError(error, service.logger, "/test/Insert");
    expect(answer.code).toBe(Code.InvalidArgument);
    expect(answer.rawMessage).toMatch(/NUL byte/);
  });
});
