import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { createDualProtocolServer, type DualProtocolServer } from "@thinmesh/platform";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { defaultMaxRequestBytes, responseCompleted } from "../src/forward.js";
import type { IngressOptions } from "../src/ingress.js";
import type { HttpRoute } from "../src/mesh/index.js";
import type { AccessRecord } from "../src/sidecar/telemetry.js";
import { testIngress } from "./gateway-support.js";

// A fake upstream that records what reached it: the exact request target and the body size.
interface Received {
  method: string;
  target: string;
  bytes: number;
}
const received: Received[] = [];
let hold: ((res: http.ServerResponse | http2.Http2ServerResponse) => void) | undefined;
const upstreamClosed: string[] = [];
function fakeUpstream(): DualProtocolServer {
  return createDualProtocolServer((req, res) => {
    let bytes = 0;
    req.on("data", (chunk: Buffer) => {
      bytes += chunk.length;
    });
    req.on("end", () => {
      received.push({ method: req.method ?? "", target: req.url ?? "", bytes });
      if (hold) return hold(res);
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ target: req.url, bytes }));
    });
    res.on("close", () => {
      if (!responseCompleted(res)) upstreamClosed.push(req.url ?? "");
    });
  });
}

const order = "/shop.order.v1.OrderService";
const deliver = "/shop.events.v1.EventSinkService/Deliver";
const routes: HttpRoute[] = [
  {
    name: "order",
    match: [{ uri: { prefix: `${order}/` } }],
    route: [{ destination: { host: "order" } }],
  },
];

let upstream: DualProtocolServer;
let upstreamBase: string;
const hops: AccessRecord[] = [];
const started: DualProtocolServer[] = [];

async function startIngress(limits: Partial<Omit<IngressOptions, "config" | "outbound">> = {}) {
  const ingress = testIngress({
    routes,
    upstreams: { order: upstreamBase },
    onRecord: (record) => hops.push(record),
    limits,
  });
  started.push(ingress);
  const { port } = await ingress.listen(0, "127.0.0.1");
  return port;
}

let port: number;
beforeAll(async () => {
  upstream = fakeUpstream();
  upstreamBase = `http://127.0.0.1:${(await upstream.listen(0, "127.0.0.1")).port}`;
  port = await startIngress();
});
afterAll(async () => {
  for (const server of started) await server.close(500);
  await upstream?.close(500);
});
beforeEach(() => {
  received.length = 0;
  hops.length = 0;
  upstreamClosed.length = 0;
  hold = undefined;
});

/** HTTP/1.1 with the target sent as given (fetch and new URL() would resolve it first). */
function h1(target: string, options: { port?: number; body?: Buffer | string } = {}) {
  return new Promise<{ status: number; body: string; requestId?: string }>((resolve, reject) => {
    const request = http.request(
      { host: "127.0.0.1", port: options.port ?? port, path: target, method: "POST", agent: false },
      (response) => {
        let body = "";
        response.setEncoding("utf8");
        response.on("data", (chunk: string) => {
          body += chunk;
        });
        response.on("end", () =>
          resolve({
            status: response.statusCode ?? 0,
            body,
            ...(typeof response.headers["x-request-id"] === "string" && {
              requestId: response.headers["x-request-id"],
            }),
          }),
        );
      },
    );
    request.on("error", reject);
    request.end(options.body ?? "{}");
  });
}

function h2(target: string, options: { port?: number; body?: Buffer | string } = {}) {
  return new Promise<{ status: number; body: string }>((resolve, reject) => {
    const session = http2.connect(`http://127.0.0.1:${options.port ?? port}`);
    session.on("error", reject);
    const stream = session.request({ ":method": "POST", ":path": target });
    let status = 0;
    let body = "";
    stream.on("response", (headers) => {
      status = Number(headers[":status"]);
    });
    stream.setEncoding("utf8");
    stream.on("data", (chunk: string) => {
      body += chunk;
    });
    stream.on("close", () => {
      session.close();
      resolve({ status, body });
    });
    stream.on("error", reject);
    stream.end(options.body ?? "{}");
  });
}

/** Writes raw bytes, then ends, resets or waits; resolves with what came back. */
function raw(
  bytes: string | Buffer,
  then: "end" | "reset" | "wait",
  options: { port?: number; waitMs?: number } = {},
) {
  return new Promise<{ response: string; closedByServer: boolean; ms: number }>((resolve) => {
    const begin = performance.now();
    let response = "";
    let closedByServer = false;
    const socket = net.connect(options.port ?? port, "127.0.0.1", () => {
      socket.write(bytes);
      if (then === "end") socket.end();
      if (then === "reset") setTimeout(() => socket.resetAndDestroy(), 50);
    });
    socket.on("data", (chunk) => {
      response += chunk.toString("latin1");
    });
    socket.on("error", () => {});
    socket.on("end", () => {
      closedByServer = true;
    });
    const timer = setTimeout(() => socket.destroy(), options.waitMs ?? 300);
    socket.on("close", () => {
      clearTimeout(timer);
      resolve({ response, closedByServer, ms: performance.now() - begin });
    });
  });
}

const waitFor = async (check: () => boolean, ms = 5000) => {
  const until = Date.now() + ms;
  while (!check()) {
    if (Date.now() > until) throw new Error("condition not met in time");
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
};

const post = (length: number, chunked = false) =>
  `POST ${order}/Login HTTP/1.1\r\nHost: x\r\n${chunked ? "Transfer-Encoding: chunked" : `Content-Length: ${length}`}\r\n\r\n`;

/** The ingress still serves: a proper request after the hostile one is answered. */
async function stillServes(at = port) {
  const answer = await h1(`${order}/GetOrder`, { port: at });
  expect(answer.status).toBe(200);
}

describe("path normalisation at the ingress", () => {
  it.each([
    ["..", `${order}/..${deliver}`],
    ["%2e%2e", `${order}/%2e%2e${deliver}`],
    ["%2E.", `${order}/%2E.${deliver}`],
    [".%2e", `${order}/.%2e${deliver}`],
    ["..\\", `${order}/..\\shop.events.v1.EventSinkService\\Deliver`],
    ["x/../../", `${order}/x/../..${deliver}`],
    ["a/b/../../", `/a/b/../..${deliver}`],
  ])("routes %s by the normalised path: no route to an internal RPC (404 NR)", async (_, target) => {
    for (const send of [h1, h2]) {
      const answer = await send(target);
      expect(answer.status).toBe(404);
      expect(hops.at(-1)).toMatchObject({
        response_code: 404,
        response_flags: "NR",
        path: deliver,
      });
    }
    expect(received).toEqual([]);
  });

  it.each([
    ["/./", `${order}/./GetOrder`],
    ["//", `/${order}//GetOrder`],
    ["%47 (unreserved, decoded)", `${order}/%47etOrder`],
    ["\\", `${order}\\GetOrder`],
    ["x/../", `${order}/x/../GetOrder`],
  ])("forwards %s as exactly the normalised path", async (_, target) => {
    for (const send of [h1, h2]) {
      const answer = await send(`${target}?page=2&next=/../x`);
      expect(answer.status).toBe(200);
    }
    const normalized = `${order}/GetOrder?page=2&next=/../x`;
    expect(received.map((r) => r.target)).toEqual([normalized, normalized]);
    expect(hops.at(-1)).toMatchObject({
      path: `${order}/GetOrder`,
      response_code_details: "via_upstream",
    });
  });

  it.each([
    ["%2f", `${order}/..%2f${deliver}`],
    ["%2F", `${order}%2F..%2F${deliver}`],
    ["%5c", `${order}/..%5c${deliver}`],
    ["%5C", `${order}/..%5C${deliver}`],
    ["/.. above the root", `/x/../..${order}/GetOrder`],
    ["%00", `${order}/Get%00Order`],
    ["a bad escape", `${order}/Get%zzOrder`],
    ["a fragment", `${order}/GetOrder#x`],
    // HTTP/2 itself refuses a :path that does not start with "/" (nghttp2: PROTOCOL_ERROR).
    ["an absolute-form target", `http://order.shop${order}/GetOrder`, [h1]],
    ["the asterisk form", "*", [h1]],
  ])("refuses %s with 400 Bad Request", async (_, target, senders = [h1, h2]) => {
    for (const send of senders) {
      const answer = await send(target);
      expect(answer.status).toBe(400);
      expect(answer.body).toMatch(/^Bad Request: /);
      // Envoy's local replies carry no x-request-id (Istio sets no always_set_request_id_in_response).
      expect("requestId" in answer).toBe(false);
      expect(hops.at(-1)).toMatchObject({
        response_code: 400,
        response_code_details: "path_normalization_failed",
      });
    }
    expect(received).toEqual([]);
  });
});

describe("access records", () => {
  it("never hold the query, even of a refused target (it may carry a token)", async () => {
    for (const target of [`${order}/GetOrder`, `/x/../..${order}/GetOrder`, `${order}/Get%zz`]) {
      await h1(`${target}?access_token=s3cret`);
      expect(hops.at(-1)?.path).toBe(target);
      expect(JSON.stringify(hops.at(-1))).not.toContain("s3cret");
    }
  });
});

describe("no client can crash the ingress", () => {
  it("survives half a body and a hang-up (FIN), and records DC", async () => {
    await raw(`${post(100)}{`, "end");
    await waitFor(() => hops.length === 1);
    expect(hops[0]).toMatchObject({
      response_code: 0,
      response_flags: "DC",
      response_code_details: "downstream_remote_disconnect",
    });
    expect(received).toEqual([]);
    await stillServes();
  });

  it("survives half a body and a reset (RST)", async () => {
    await raw(`${post(100)}{`, "reset");
    await waitFor(() => hops.length === 1);
    expect(hops[0]).toMatchObject({ response_code: 0, response_flags: "DC" });
    await stillServes();
  });

  it("answers an invalid chunk size 400 and records DPE", async () => {
    const { response } = await raw(`${post(0, true)}5\r\nhello\r\nzz\r\n`, "wait");
    expect(response).toMatch(/^HTTP\/1\.1 400 /);
    await waitFor(() => hops.length === 1);
    expect(hops[0]).toMatchObject({ response_code: 400, response_flags: "DPE" });
    expect(received).toEqual([]);
    await stillServes();
  });

  it("survives a connection reset before its protocol is known", async () => {
    for (const bytes of ["", "PRI * HTTP/2", "POST /shop"]) await raw(bytes, "reset");
    await stillServes();
  });

  it("survives an h2 stream reset mid-body, and the session goes on", async () => {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    const stream = session.request({ ":method": "POST", ":path": `${order}/Login` });
    stream.on("error", () => {});
    stream.write("{");
    await new Promise((resolve) => setTimeout(resolve, 50));
    // destroy() sends RST_STREAM(CANCEL) alone; close() would send END_STREAM first.
    stream.destroy();
    await waitFor(() => hops.length === 1);
    expect(hops[0]).toMatchObject({
      response_code: 0,
      response_flags: "DC",
      response_code_details: "downstream_remote_disconnect",
    });
    expect(received).toEqual([]); // half a body is never forwarded
    const next = session.request({ ":method": "POST", ":path": `${order}/GetOrder` });
    next.end("{}");
    next.resume();
    const status = await new Promise((resolve) =>
      next.on("response", (headers) => resolve(headers[":status"])),
    );
    expect(status).toBe(200);
    session.close();
    await stillServes();
  });

  it("resets the upstream request when the client goes away waiting for the answer", async () => {
    hold = () => {}; // the upstream never answers
    await raw(`${post(2)}{}`, "reset", { waitMs: 1000 });
    await waitFor(() => hops.length === 1);
    expect(hops[0]).toMatchObject({ response_code: 0, response_flags: "DC", attempts: 1 });
    await waitFor(() => upstreamClosed.length === 1);
    hold = undefined;
    await stillServes();
  });

  it("survives an upstream that resets mid-response (UC), and answers the next request", async () => {
    hold = (res) => {
      res.writeHead(200, { "content-type": "application/json" });
      (res as http.ServerResponse).write("{");
      // The upstream's connection drops mid-body (its process died, say).
      setTimeout(
        () => ("stream" in res ? res.stream.session?.destroy() : res.socket?.destroy()),
        20,
      );
    };
    const answer = await new Promise<string>((resolve) => {
      const request = http.request(
        { host: "127.0.0.1", port, path: `${order}/GetOrder`, method: "POST", agent: false },
        (response) => {
          response.on("data", () => {});
          response.on("error", (error) => resolve(error.message));
          response.on("end", () => resolve("complete"));
        },
      );
      request.on("error", (error) => resolve(error.message));
      request.end("{}");
    });
    expect(answer).not.toBe("complete");
    await waitFor(() => hops.length === 1);
    expect(hops[0]).toMatchObject({ response_code: 200, response_flags: "UC", attempts: 1 });
    hold = undefined;
    await stillServes();
  });
});

describe("bounded request bodies", () => {
  it(`forwards a body of exactly the limit (${defaultMaxRequestBytes} bytes)`, async () => {
    const body = Buffer.alloc(defaultMaxRequestBytes, 0x61);
    expect((await h1(`${order}/PlaceOrder`, { body })).status).toBe(200);
    expect((await h2(`${order}/PlaceOrder`, { body })).status).toBe(200);
    expect(received.map((r) => r.bytes)).toEqual([defaultMaxRequestBytes, defaultMaxRequestBytes]);
  });

  it("refuses one byte more with 413, over HTTP/1.1 and h2, and forwards nothing", async () => {
    const body = Buffer.alloc(defaultMaxRequestBytes + 1, 0x61);
    for (const send of [h1, h2]) {
      const answer = await send(`${order}/PlaceOrder`, { body });
      expect(answer).toEqual({ status: 413, body: "Payload Too Large" });
      expect(hops.at(-1)).toMatchObject({
        response_code: 413,
        response_code_details: "request_payload_too_large",
      });
    }
    expect(received).toEqual([]);
    await stillServes();
  });

  it("ends an h2 request stream it answered 413, so the client stops sending", async () => {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    const stream = session.request({ ":method": "POST", ":path": `${order}/PlaceOrder` });
    stream.on("error", () => {});
    stream.write(Buffer.alloc(defaultMaxRequestBytes + 1, 0x61)); // and never ends its side
    const status = await new Promise((resolve) =>
      stream.on("response", (headers) => resolve(headers[":status"])),
    );
    expect(status).toBe(413);
    stream.resume();
    await new Promise((resolve) => stream.on("close", resolve));
    expect(stream.rstCode).toBe(http2.constants.NGHTTP2_NO_ERROR);
    session.close();
  });

  it("answers a declared 200 MB body 413 from its Content-Length, before any byte of it", async () => {
    const { response } = await raw(post(200 * 1024 * 1024), "wait", { waitMs: 3000 });
    expect(response).toMatch(/^HTTP\/1\.1 413 Payload Too Large\r\n/);
    expect(hops.at(-1)).toMatchObject({
      response_code: 413,
      response_code_details: "request_payload_too_large",
    });
  });

  it("answers a 200 MB body 413 while it streams in, without reading it", async () => {
    const answer = await new Promise<{ status: string; sentBefore: number }>((resolve) => {
      const socket = net.connect(port, "127.0.0.1");
      let sent = 0;
      let status = "";
      const chunk = Buffer.alloc(64 * 1024, 0x61);
      socket.on("error", () => {});
      socket.on("data", (data) => {
        status ||= data.toString("latin1").split("\r\n")[0] ?? "";
        resolve({ status, sentBefore: sent });
        socket.destroy();
      });
      socket.write(`${post(200 * 1024 * 1024)}`);
      const pump = () => {
        while (!socket.destroyed && sent < 200 * 1024 * 1024) {
          sent += chunk.length;
          if (!socket.write(chunk)) return void socket.once("drain", pump);
        }
      };
      pump();
    });
    expect(answer.status).toBe("HTTP/1.1 413 Payload Too Large");
    // Only what the sockets' buffers held before the answer came; never the whole body.
    expect(answer.sentBefore).toBeLessThan(32 * 1024 * 1024);
    expect(received).toEqual([]);
    await stillServes();
  });

  it("stops a chunked body (no Content-Length) as soon as it crosses the limit", async () => {
    const limited = await startIngress({ maxRequestBytes: 64 * 1024 });
    const chunk = Buffer.alloc(16 * 1024, 0x61);
    const head = `POST ${order}/PlaceOrder HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n`;
    const chunks = Array.from({ length: 8 }, () =>
      Buffer.concat([Buffer.from(`${chunk.length.toString(16)}\r\n`), chunk, Buffer.from("\r\n")]),
    );
    const { response } = await raw(Buffer.concat([Buffer.from(head), ...chunks]), "wait", {
      port: limited,
      waitMs: 3000,
    });
    expect(response).toMatch(/^HTTP\/1\.1 413 Payload Too Large\r\n/);
    expect(response.toLowerCase()).toContain("connection: close");
    expect(received).toEqual([]);
    await stillServes(limited);
  });
});

describe("timeouts for slow clients", () => {
  const limits = { headersTimeoutMs: 300, requestTimeoutMs: 300, idleTimeoutMs: 600 };

  it("cuts off a client that never finishes its headers (408)", async () => {
    const at = await startIngress(limits);
    const { response, closedByServer, ms } = await raw(
      `POST ${order}/Login HTTP/1.1\r\nHost: x\r\n`,
      "wait",
      {
        port: at,
        waitMs: 5000,
      },
    );
    expect(response).toMatch(/^HTTP\/1\.1 408 /);
    expect(closedByServer).toBe(true);
    expect(ms).toBeLessThan(4000);
    await stillServes(at);
  });

  it("cuts off a client that sends nothing at all", async () => {
    const at = await startIngress(limits);
    const { closedByServer, ms } = await raw("", "wait", { port: at, waitMs: 5000 });
    expect(closedByServer).toBe(true);
    expect(ms).toBeLessThan(4000);
  });

  it("cuts off a body that does not arrive in time (408 request timeout)", async () => {
    const at = await startIngress(limits);
    const { response, ms } = await raw(
      `POST ${order}/Login HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{`,
      "wait",
      { port: at, waitMs: 5000 },
    );
    expect(response).toMatch(/^HTTP\/1\.1 408 Request Timeout\r\n/);
    expect(ms).toBeLessThan(4000);
    expect(hops.at(-1)).toMatchObject({
      response_code: 408,
      response_code_details: "request_overall_timeout",
    });
    expect(received).toEqual([]);
    await stillServes(at);
  });

  it("closes an HTTP/1.1 connection with no traffic either way (and resets its upstream call)", async () => {
    const at = await startIngress(limits);
    hold = () => {}; // the upstream never answers
    const { closedByServer, ms } = await raw(`${post(2)}{}`, "wait", { port: at, waitMs: 5000 });
    expect(closedByServer).toBe(true);
    expect(ms).toBeLessThan(4000);
    await waitFor(() => hops.length === 1);
    expect(hops[0]).toMatchObject({ response_code: 0, response_flags: "DC" });
    await waitFor(() => upstreamClosed.length === 1);
  });

  it("closes an idle h2 session", async () => {
    const at = await startIngress(limits);
    const session = http2.connect(`http://127.0.0.1:${at}`);
    session.on("error", () => {});
    const begin = performance.now();
    await new Promise((resolve) => session.on("close", resolve));
    expect(performance.now() - begin).toBeLessThan(4000);
  });
});
