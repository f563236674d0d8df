import http from "node:http";
import http2 from "node:http2";
import { createDualProtocolServer, type DualProtocolServer } from "@thinmesh/platform";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createUpstreams,
  type DownstreamRequest,
  type DownstreamResponse,
  type ForwardOutcome,
} from "../src/forward.js";

// An upstream whose behaviour the path chooses: /ok answers (with a gRPC-style trailer over
// h2), /reset drops the connection before any header, /half drops it mid-body.
function upstreamServer(): DualProtocolServer {
  return createDualProtocolServer((req, res) => {
    req.resume();
    req.on("end", () => {
      if (req.url?.startsWith("/reset")) return req.socket.destroy();
      if (req.url?.startsWith("/half")) {
        const response = res as http.ServerResponse; // one of the two; the same calls
        response.writeHead(200);
        response.write("part");
        setTimeout(() => req.socket.destroy(), 20);
        return;
      }
      if (req.httpVersionMajor === 2)
        (res as http2.Http2ServerResponse).addTrailers({ "grpc-status": "0" });
      res.writeHead(201, { "x-target": req.url ?? "" });
      res.end("done");
    });
  });
}

const upstreams = createUpstreams();
let upstream: DualProtocolServer;
let base: string;
let closedBase: string;
const outcomes: ForwardOutcome[] = [];
let downstreamPort: number;
let downstreamH2Port: number;
const downstreams: { close(): void }[] = [];

beforeAll(async () => {
  upstream = upstreamServer();
  base = `http://127.0.0.1:${(await upstream.listen(0, "127.0.0.1")).port}`;
  const closed = createDualProtocolServer(() => {});
  closedBase = `http://127.0.0.1:${(await closed.listen(0, "127.0.0.1")).port}`;
  await closed.close(0);
  // Downstream servers that forward whatever they receive to the base in the x-base header.
  const handler = async (req: DownstreamRequest, res: DownstreamResponse) => {
    const outcome = await upstreams.forward(
      String(req.headers["x-base"]),
      {
        method: req.method ?? "GET",
        target: req.url ?? "/",
        headers: {},
        body: Buffer.from(req.method === "GET" ? "" : "{}"), // Connect GETs carry no body
        protocol: req.httpVersionMajor === 2 ? "h2" : "http/1.1",
      },
      res,
    );
    outcomes.push(outcome);
    if (!outcome.ok && !res.headersSent) res.writeHead(503).end(outcome.failure);
  };
  const h1 = http.createServer((req, res) => void handler(req, res));
  const h2 = http2.createServer((req, res) => void handler(req, res));
  downstreams.push(h1, h2);
  downstreamPort = await new Promise((resolve) =>
    h1.listen(0, "127.0.0.1", () => resolve((h1.address() as { port: number }).port)),
  );
  downstreamH2Port = await new Promise((resolve) =>
    h2.listen(0, "127.0.0.1", () => resolve((h2.address() as { port: number }).port)),
  );
});
afterAll(async () => {
  upstreams.close();
  for (const server of downstreams) server.close();
  await upstream?.close(200);
});

async function viaH1(target: string, to: string) {
  return new Promise<{ status: number; body: string; headers: http.IncomingHttpHeaders }>(
    (resolve) => {
      const request = http.request(
        {
          host: "127.0.0.1",
          port: downstreamPort,
          path: target,
          headers: { "x-base": to },
          agent: false,
        },
        (response) => {
          let body = "";
          response.on("data", (chunk) => {
            body += chunk;
          });
          response.on("end", () =>
            resolve({ status: response.statusCode ?? 0, body, headers: response.headers }),
          );
          response.on("error", () => resolve({ status: -1, body, headers: response.headers }));
        },
      );
      request.on("error", () => resolve({ status: -1, body: "", headers: {} }));
      request.end();
    },
  );
}

async function viaH2(target: string, to: string) {
  const session = http2.connect(`http://127.0.0.1:${downstreamH2Port}`);
  session.on("error", () => {});
  const stream = session.request({ ":path": target, "x-base": to });
  let status = -1;
  let body = "";
  let trailers: http2.IncomingHttpHeaders = {};
  stream.on("response", (headers) => {
    status = Number(headers[":status"]);
  });
  stream.on("trailers", (received) => {
    trailers = received;
  });
  stream.on("data", (chunk) => {
    body += chunk;
  });
  stream.on("error", () => {});
  await new Promise((resolve) => stream.on("close", resolve));
  session.close();
  return { status, body, trailers, rstCode: stream.rstCode };
}

const last = () => outcomes.at(-1);

describe("forward: one request to an upstream, the outcome as data", () => {
  it("relays the answer over HTTP/1.1 with the exact target", async () => {
    const answer = await viaH1("/ok/%2E/./x?y=/../z", base);
    expect(answer).toMatchObject({ status: 201, body: "done" });
    expect(answer.headers["x-target"]).toBe("/ok/%2E/./x?y=/../z"); // never re-resolved
    expect(last()).toEqual({ ok: true, status: 201 });
  });

  it("relays the answer over h2, trailers included", async () => {
    const answer = await viaH2("/ok/./x", base);
    expect(answer).toMatchObject({ status: 201, body: "done" });
    expect(answer.trailers["grpc-status"]).toBe("0");
    expect(last()).toEqual({ ok: true, status: 201 });
  });

  it.each([
    ["HTTP/1.1", viaH1],
    ["h2", viaH2],
  ])("reports connect-failure over %s when nothing listens", async (_, via) => {
    const answer = await via("/ok", closedBase);
    expect(answer.status).toBe(503);
    expect(last()).toMatchObject({ ok: false, failure: "connect-failure", responseStarted: false });
  });

  it.each([
    ["HTTP/1.1", viaH1],
    ["h2", viaH2],
  ])("reports a reset before any header over %s", async (_, via) => {
    const answer = await via("/reset", base);
    expect(answer.status).toBe(503);
    expect(last()).toMatchObject({ ok: false, failure: "reset", responseStarted: false });
  });

  it("reports a reset after the response started, and cuts the client off", async () => {
    const answer = await viaH1("/half", base);
    expect(answer.status).toBe(-1); // the client sees an aborted response, not a complete one
    expect(last()).toMatchObject({
      ok: false,
      failure: "reset",
      responseStarted: true,
      status: 200,
    });
  });
});
