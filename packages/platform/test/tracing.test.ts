import { createServer, type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { SpanKind, SpanStatusCode } from "@opentelemetry/api";
import { InMemorySpanExporter } from "@opentelemetry/sdk-trace-base";
import { MoneySchema } from "@thinmesh/contracts/shop/common/v1/money_pb.js";
import {
  type DeliverRequest,
  DeliverRequestSchema,
  EventSinkService,
} from "@thinmesh/contracts/shop/events/v1/events_pb.js";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  ConfigError,
  contextInterceptor,
  createOnePortServer,
  currentContext,
  forwardContextInterceptor,
  type OnePortServer,
} from "../src/index.js";
import { buildEventEnvelope } from "../src/testing/index.js";
import {
  initTracing,
  otlpTracesUrl,
  type Tracing,
  tracingClientInterceptor,
} from "../src/tracing.js";

const deliver = "/shop.events.v1.EventSinkService/Deliver";
const traceId = "0af7651916cd43dd8448eb211c80319c";
const callerSpanId = "b7ad6b7169203331";
const enabledEnv = { OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:9" };

/** A Deliver request carrying an event of any `type` (its data is a Money). */
function event(type: string): DeliverRequest {
  const money = { currencyCode: "EUR", amountMinor: 1n };
  return create(DeliverRequestSchema, {
    events: [buildEventEnvelope(MoneySchema, money, { source: "test", type })],
  });
}

/**
 * Two services in one process, wired the way startService and createPeerClient wire them:
 * "front" handles Deliver by calling "back" (the event type says how back answers), back
 * records the headers it received and the log context it handled the call in.
 */
async function startPair(tracing: Tracing) {
  const seen: { logTraceId: string | undefined }[] = [];
  const sent: Record<string, string>[] = [];
  const interceptors: Interceptor[] = [contextInterceptor(), tracing.serverInterceptor()];
  const server = (handler: (request: DeliverRequest) => Promise<void>) =>
    createOnePortServer({
      routes: (router) =>
        router.service(EventSinkService, {
          async deliver(request) {
            await handler(request);
            return { results: [] };
          },
        }),
      interceptors,
      fetch: () => new Response("not found", { status: 404 }),
      readMaxBytes: 64 * 1024,
    });
  const back = server(async (request) => {
    seen.push({ logTraceId: currentContext()?.traceId });
    if (request.events[0]?.type === "fail.internal") throw new ConnectError("boom", Code.Internal);
    if (request.events[0]?.type === "fail.not_found") throw new ConnectError("gone", Code.NotFound);
  });
  const backUrl = await listen(back);
  const peer = createClient(
    EventSinkService,
    createConnectTransport({
      baseUrl: backUrl,
      httpVersion: "1.1",
      // What createPeerClient uses once tracing is wired in.
      interceptors: [
        forwardContextInterceptor(),
        tracingClientInterceptor(),
        (next) => async (req) => {
          const headers: Record<string, string> = {};
          req.header.forEach((value, name) => {
            headers[name] = value;
          });
          sent.push(headers);
          return next(req);
        },
      ],
    }),
  );
  const front = server(async (request) => {
    await peer.deliver(request);
  });
  const frontUrl = await listen(front);
  const client = createClient(
    EventSinkService,
    createConnectTransport({ baseUrl: frontUrl, httpVersion: "1.1" }),
  );
  return {
    client,
    /** The outgoing headers front sent to back, per call. */
    sent,
    /** What back saw, per call. */
    seen,
    async stop() {
      await Promise.all([front.close(0), back.close(0)]);
    },
  };
}

async function listen(server: OnePortServer) {
  const address = await server.listen(0, "127.0.0.1");
  return `http://127.0.0.1:${address.port}`;
}

const pick = (headers: Record<string, string>, ...names: string[]) =>
  Object.fromEntries(names.filter((n) => headers[n] !== undefined).map((n) => [n, headers[n]]));

describe("with an OTLP endpoint", () => {
  const exporter = new InMemorySpanExporter();
  let tracing: Tracing;
  let pair: Awaited<ReturnType<typeof startPair>>;

  beforeAll(async () => {
    tracing = await initTracing({ service: "front", version: "v1", env: enabledEnv, exporter });
    pair = await startPair(tracing);
  });
  afterAll(async () => {
    await pair?.stop();
    await tracing?.shutdown();
  });
  afterEach(() => {
    exporter.reset();
    pair.sent.length = 0;
    pair.seen.length = 0;
  });

  async function spans() {
    await tracing.forceFlush();
    const all = exporter.getFinishedSpans();
    const find = (kind: SpanKind, parentSpanId?: string) =>
      all.find(
        (s) =>
          s.kind === kind &&
          (parentSpanId === undefined || s.parentSpanContext?.spanId === parentSpanId),
      );
    return { all, find };
  }

  it("joins the caller's trace: server span, client span, and the next hop's parent", async () => {
    await pair.client.deliver(event("ok"), {
      headers: {
        traceparent: `00-${traceId}-${callerSpanId}-01`,
        tracestate: "vendor=1",
        "x-request-id": "req-1",
      },
    });
    const { all, find } = await spans();
    expect(all).toHaveLength(3); // front SERVER, front CLIENT, back SERVER
    const server = find(SpanKind.SERVER, callerSpanId)!;
    expect(server).toBeDefined();
    expect(server.name).toBe(deliver);
    expect(server.spanContext().traceId).toBe(traceId);
    expect(server.attributes).toMatchObject({
      "rpc.system.name": "connectrpc",
      "rpc.method": deliver.slice(1),
      "rpc.status_code": "ok",
    });
    expect(server.resource.attributes).toMatchObject({
      "service.name": "front",
      "service.version": "v1",
    });

    const client = find(SpanKind.CLIENT, server.spanContext().spanId)!;
    expect(client).toBeDefined();
    expect(client.name).toBe(deliver);
    expect(client.spanContext().traceId).toBe(traceId);
    expect(client.attributes["server.address"]).toBe("127.0.0.1");

    const sent = pair.sent[0]!;
    const clientSpanId = client.spanContext().spanId;
    expect(sent.traceparent).toBe(`00-${traceId}-${clientSpanId}-01`);
    expect(sent.tracestate).toBe("vendor=1");
    expect(sent["x-request-id"]).toBe("req-1");
    expect(pick(sent, "x-b3-traceid", "x-b3-spanid", "x-b3-sampled")).toEqual({
      "x-b3-traceid": traceId,
      "x-b3-spanid": clientSpanId,
      "x-b3-sampled": "1",
    });
    expect(sent["x-b3-parentspanid"]).toBeUndefined();

    const next = find(SpanKind.SERVER, clientSpanId)!;
    expect(next).toBeDefined();
    expect(next.spanContext().traceId).toBe(traceId);
    // Log lines inside the handler carry the same trace id.
    expect(pair.seen[0]?.logTraceId).toBe(traceId);
  });

  it("joins a trace that arrives as B3 headers (Zipkin-style sidecars)", async () => {
    await pair.client.deliver(event("ok"), {
      headers: {
        "x-b3-traceid": "463ac35c9f6413ad",
        "x-b3-spanid": "a2fb4a1d1a96d312",
        "x-b3-sampled": "1",
      },
    });
    const { find } = await spans();
    const server = find(SpanKind.SERVER, "a2fb4a1d1a96d312")!;
    expect(server).toBeDefined();
    expect(server.spanContext().traceId).toBe("0000000000000000463ac35c9f6413ad");
    expect(pair.sent[0]?.traceparent).toMatch(/^00-0000000000000000463ac35c9f6413ad-/);
  });

  it("starts a new trace when the request carries none, logged with its id", async () => {
    await pair.client.deliver(event("ok"));
    const { all, find } = await spans();
    const root = all.find((s) => s.kind === SpanKind.SERVER && !s.parentSpanContext)!;
    const rootTrace = root.spanContext().traceId;
    const clientSpan = find(SpanKind.CLIENT, root.spanContext().spanId)!;
    expect(root.name).toBe(deliver);
    expect(pair.sent[0]?.traceparent).toBe(`00-${rootTrace}-${clientSpan.spanContext().spanId}-01`);
    expect(pair.seen[0]?.logTraceId).toBe(rootTrace);
  });

  it("follows the caller's sampling decision", async () => {
    await pair.client.deliver(event("ok"), {
      headers: { traceparent: `00-${traceId}-${callerSpanId}-00` },
    });
    const { all } = await spans();
    expect(all).toHaveLength(0);
    // The trace still propagates, unsampled, so the next sidecar does not start a new one.
    expect(pair.sent[0]?.traceparent).toMatch(new RegExp(`^00-${traceId}-[\\da-f]{16}-00$`));
  });

  it("records the Connect code; server faults and failed calls are errors", async () => {
    const caller = { headers: { traceparent: `00-${traceId}-${callerSpanId}-01` } };
    await expect(pair.client.deliver(event("fail.internal"), caller)).rejects.toThrow(/boom/);
    let { all } = await spans();
    expect(all).toHaveLength(3);
    for (const span of all) {
      expect(span.attributes["rpc.status_code"]).toBe("internal");
      expect(span.status.code).toBe(SpanStatusCode.ERROR);
      expect(span.attributes["error.type"]).toBe("internal");
    }
    exporter.reset();

    await expect(pair.client.deliver(event("fail.not_found"), caller)).rejects.toThrow(/gone/);
    ({ all } = await spans());
    const byKind = (kind: SpanKind) => all.filter((s) => s.kind === kind);
    for (const span of all) expect(span.attributes["rpc.status_code"]).toBe("not_found");
    // A caller's mistake is not the server's error; the call that got it failed, though.
    for (const span of byKind(SpanKind.SERVER)) expect(span.status.code).toBe(SpanStatusCode.UNSET);
    expect(byKind(SpanKind.CLIENT)[0]?.status.code).toBe(SpanStatusCode.ERROR);
  });

  it("traces outgoing calls made outside a request (the outbox relay) as a trace of their own", async () => {
    const peer = createClient(
      EventSinkService,
      createConnectTransport({
        baseUrl: "http://127.0.0.1:9",
        httpVersion: "1.1",
        interceptors: [forwardContextInterceptor(), tracingClientInterceptor()],
      }),
    );
    await expect(peer.deliver(event("ok"))).rejects.toThrow();
    const { all } = await spans();
    expect(all).toHaveLength(1);
    expect(all[0]?.kind).toBe(SpanKind.CLIENT);
    expect(all[0]?.status.code).toBe(SpanStatusCode.ERROR);
  });
});

describe("without an endpoint", () => {
  const exporter = new InMemorySpanExporter();
  let tracing: Tracing;
  let pair: Awaited<ReturnType<typeof startPair>>;

  beforeAll(async () => {
    tracing = await initTracing({ service: "front", version: "v1", env: {}, exporter });
    pair = await startPair(tracing);
  });
  afterAll(async () => {
    await pair?.stop();
  });

  it("makes no spans and forwards the incoming trace headers unchanged", async () => {
    expect(tracing.enabled).toBe(false);
    const incoming = {
      traceparent: `00-${traceId}-${callerSpanId}-01`,
      tracestate: "vendor=1",
      "x-request-id": "req-2",
      b3: `${traceId}-${callerSpanId}-1`,
      "x-b3-traceid": traceId,
      "x-b3-spanid": callerSpanId,
      "x-b3-parentspanid": "00f067aa0ba902b7",
      "x-b3-sampled": "1",
    };
    await pair.client.deliver(event("ok"), { headers: incoming });
    await tracing.forceFlush();
    expect(exporter.getFinishedSpans()).toHaveLength(0);
    expect(pick(pair.sent[0]!, ...Object.keys(incoming))).toEqual(incoming);
    expect(pair.seen[0]?.logTraceId).toBe(traceId);
  });

  it("is the identity as a server interceptor", () => {
    const next = async () => ({}) as never;
    expect(tracing.serverInterceptor()(next)).toBe(next);
  });
});

describe("configuration", () => {
  it("reads the OTLP traces URL the way the OpenTelemetry SDKs do", () => {
    expect(otlpTracesUrl({})).toBeUndefined();
    expect(otlpTracesUrl({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://jaeger:4318" })).toBe(
      "http://jaeger:4318/v1/traces",
    );
    expect(otlpTracesUrl({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://jaeger:4318/" })).toBe(
      "http://jaeger:4318/v1/traces",
    );
    expect(
      otlpTracesUrl({
        OTEL_EXPORTER_OTLP_ENDPOINT: "http://ignored:4318",
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://collector:4318/custom/traces",
      }),
    ).toBe("http://collector:4318/custom/traces");
    expect(otlpTracesUrl({ OTEL_EXPORTER_OTLP_ENDPOINT: "" })).toBeUndefined();
    expect(
      otlpTracesUrl({
        OTEL_EXPORTER_OTLP_ENDPOINT: "http://jaeger:4318",
        OTEL_SDK_DISABLED: "true",
      }),
    ).toBeUndefined();
    expect(
      otlpTracesUrl({
        OTEL_EXPORTER_OTLP_ENDPOINT: "http://jaeger:4318",
        OTEL_TRACES_EXPORTER: "none",
      }),
    ).toBeUndefined();
  });

  it("refuses an endpoint that is not an http(s) URL, naming the variable", () => {
    expect(() => otlpTracesUrl({ OTEL_EXPORTER_OTLP_ENDPOINT: "jaeger:4318" })).toThrow(
      ConfigError,
    );
    expect(() => otlpTracesUrl({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "not a url" })).toThrow(
      /OTEL_EXPORTER_OTLP_TRACES_ENDPOINT/,
    );
  });
});

describe("OTLP/HTTP export", () => {
  it("posts the spans with the service's resource to the collector", async () => {
    const received: { path: string | undefined; type: string | undefined; body: string }[] = [];
    const collector = createServer(async (req: IncomingMessage, res) => {
      let body = "";
      for await (const chunk of req) body += chunk;
      received.push({ path: req.url, type: req.headers["content-type"], body });
      res.writeHead(200, { "content-type": "application/json" }).end("{}");
    });
    await new Promise<void>((resolve) => collector.listen(0, "127.0.0.1", resolve));
    const { port } = collector.address() as AddressInfo;
    const tracing = await initTracing({
      service: "catalog",
      version: "v2",
      env: {
        OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}`,
        OTEL_RESOURCE_ATTRIBUTES: "deployment.environment.name=test,k8s.namespace.name=shop",
      },
    });
    const pair = await startPair(tracing);
    try {
      await pair.client.deliver(event("ok"), {
        headers: { traceparent: `00-${traceId}-${callerSpanId}-01` },
      });
    } finally {
      await pair.stop();
      await tracing.shutdown();
      collector.close();
    }
    expect(received.length).toBeGreaterThan(0);
    expect(received[0]?.path).toBe("/v1/traces");
    const body = received.map((r) => r.body).join("\n");
    for (const expected of [
      '"service.name"',
      '"catalog"',
      '"service.version"',
      '"v2"',
      '"deployment.environment.name"',
      deliver,
      traceId,
    ]) {
      expect(body).toContain(expected);
    }
  });

  it("tells the service when the collector refuses the spans", async () => {
    const collector = createServer((_req, res) => res.writeHead(400).end("bad request"));
    await new Promise<void>((resolve) => collector.listen(0, "127.0.0.1", resolve));
    const { port } = collector.address() as AddressInfo;
    const errors: Error[] = [];
    const tracing = await initTracing({
      service: "order",
      version: "v1",
      env: { OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}` },
      onExportError: (error) => errors.push(error),
    });
    const pair = await startPair(tracing);
    try {
      await pair.client.deliver(event("ok"));
      await pair.client.deliver(event("ok"));
      await tracing.forceFlush().catch(() => {});
    } finally {
      await pair.stop();
      await tracing.shutdown();
      collector.close();
    }
    // Reported once a minute at most, however many batches fail.
    expect(errors).toHaveLength(1);
    expect(errors[0]?.message).toMatch(/Bad Request/);
  });

  it("shuts down promptly when the collector cannot be reached", async () => {
    const tracing = await initTracing({
      service: "order",
      version: "v1",
      env: { OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:9" },
    });
    const pair = await startPair(tracing);
    await pair.client.deliver(event("ok"));
    await pair.stop();
    const started = Date.now();
    await tracing.shutdown();
    expect(Date.now() - started).toBeLessThan(5_000);
  });
});
