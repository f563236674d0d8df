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
