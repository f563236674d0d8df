import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, expect, it } from "vitest";
import { SessionPool, sendUpstream } from "../src/sidecar/upstream.js";

let server: http2.Http2Server;
let port: number;
beforeAll(async () => {
  server = http2.createServer((_req, res) => res.end("ok"));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  port = (server.address() as AddressInfo).port;
});
afterAll(() => new Promise((resolve) => server.close(resolve)));

it("closes a session idle for the connection pool's idleTimeout, and opens a new one on demand", async () => {
  const pool = new SessionPool(() => http2.connect(`http://127.0.0.1:${port}`));
  const limits = { connectTimeoutMs: 2_000, idleTimeoutMs: 150 };
  const first = pool.get("up", limits);
  const answer = await sendUpstream(first, {
    method: "GET",
    path: "/",
    authority: "up",
    headers: {},
    body: Buffer.alloc(0),
  });
  expect(answer.kind).toBe("response");
  if (answer.kind === "response") answer.stream.resume();
  await new Promise((resolve) => first.once("close", resolve));
  expect(pool.get("up", limits)).not.toBe(first);
  pool.close();
});

it("drains a session after maxRequestsPerConnection requests: those in progress finish, the next opens a new one", async () => {
  const connections: unknown[] = [];
  const slow = http2.createServer((_req, res) => setTimeout(() => res.end("slow"), 100));
  slow.on("connection", (socket) => connections.push(socket));
  await new Promise<void>((resolve) => slow.listen(0, "127.0.0.1", resolve));
  const slowPort = (slow.address() as AddressInfo).port;
  const pool = new SessionPool(() => http2.connect(`http://127.0.0.1:${slowPort}`));
  const limits = { connectTimeoutMs: 2_000, idleTimeoutMs: 0, maxRequestsPerConnection: 2 };
  const get = () => {
    const session = pool.get("up", limits);
    const body = sendUpstream(session, {
      method: "GET",
      path: "/",
      authority: "up",
      headers: {},
      body: Buffer.alloc(0),
    }).then(async (answer) => {
      if (answer.kind !== "response") return answer.kind;
      let text = "";
      for await (const chunk of answer.stream) text += chunk;
      return text;
    });
    return { session, body };
  };
  const requests = [get(), get(), get()];
  expect(requests[1]!.session).toBe(requests[0]!.session);
  expect(requests[2]!.session).not.toBe(requests[0]!.session);
  // The drained session's two requests still complete.
  expect(await Promise.all(requests.map((r) => r.body))).toEqual(["slow", "slow", "slow"]);
  expect(connections).toHaveLength(2);
  pool.close();
  await new Promise((resolve) => slow.close(resolve));
});
