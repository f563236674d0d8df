import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, expect, it } from "vitest";
import { sendUpstream, upstreamResetReply } from "../src/sidecar/upstream.js";

// An upstream that resets each stream with the code its path names, or answers /ok.
let server: http2.Http2Server;
let port: number;
let received = 0;
beforeAll(async () => {
  server = http2.createServer();
  server.on("stream", (stream, headers) => {
    received++;
    stream.on("error", () => {});
    const path = String(headers[":path"]);
    if (path === "/ok") return stream.respond({ ":status": 200 }, { endStream: true });
    if (path === "/goaway") return stream.session?.destroy();
    stream.close(Number(path.slice(1)));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  port = (server.address() as AddressInfo).port;
});
afterAll(() => new Promise((resolve) => server.close(resolve)));

const send = (session: http2.ClientHttp2Session, path: string, signal?: AbortSignal) =>
  sendUpstream(session, {
    method: "GET",
    path,
    authority: "up",
    headers: {},
    body: Buffer.alloc(0),
    ...(signal && { signal }),
  });

async function connected() {
  const session = http2.connect(`http://127.0.0.1:${port}`);
  session.on("error", () => {});
  await new Promise((resolve) => session.once("connect", resolve));
  return session;
}

it("a RST_STREAM is a remote reset (REFUSED_STREAM a refused stream) and leaves the session to the other streams", async () => {
  const session = await connected();
  const internal = await send(session, `/${http2.constants.NGHTTP2_INTERNAL_ERROR}`);
  expect(internal).toMatchObject({ kind: "remote-reset", resetReason: "remote reset" });
  const cancel = await send(session, `/${http2.constants.NGHTTP2_CANCEL}`);
  expect(cancel).toMatchObject({ kind: "remote-reset", resetReason: "remote reset" });
  const refused = await send(session, `/${http2.constants.NGHTTP2_REFUSED_STREAM}`);
  expect(refused).toMatchObject({
    kind: "refused-stream",
    resetReason: "remote refused stream reset",
  });
  expect(session.destroyed).toBe(false);
  expect((await send(session, "/ok")).kind).toBe("response");
  session.destroy();
});

it("a session that ends under the stream is a connection termination", async () => {
  const session = await connected();
  expect(await send(session, "/goaway")).toMatchObject({
    kind: "reset",
    resetReason: "connection termination",
  });
});

it("a refused connection is a remote connection failure with Envoy's transport failure reason", async () => {
  const closed = http2.createServer();
  await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
  const closedPort = (closed.address() as AddressInfo).port;
  await new Promise((resolve) => closed.close(resolve));
  const session = http2.connect(`http://127.0.0.1:${closedPort}`);
  session.on("error", () => {});
  expect(await send(session, "/ok")).toMatchObject({
    kind: "connect-failure",
    resetReason: "remote connection failure",
    transportFailure: "delayed connect error: Connection refused",
  });
});

it("sends nothing once the signal has aborted (the client went away during a fault delay)", async () => {
  const session = await connected();
  const before = received;
  expect((await send(session, "/ok", AbortSignal.abort())).kind).toBe("timeout");
  await new Promise((resolve) => setTimeout(resolve, 50));
  expect(received).toBe(before);
  session.destroy();
});

it("words the local reply as Envoy's router does", () => {
  expect(
    upstreamResetReply(
      "remote connection failure",
      true,
      "delayed connect error: Connection refused",
    ),
  ).toEqual({
    body: "upstream connect error or disconnect/reset before headers. retried and the latest reset reason: remote connection failure, transport failure reason: delayed connect error: Connection refused",
    details:
      "upstream_reset_before_response_started{remote_connection_failure|delayed_connect_error:_Connection_refused}",
    flag: "UF",
  });
  expect(upstreamResetReply("remote reset", false)).toEqual({
    body: "upstream connect error or disconnect/reset before headers. reset reason: remote reset",
    details: "upstream_reset_before_response_started{remote_reset}",
    flag: "UR",
  });
  expect(upstreamResetReply("connection termination", false).flag).toBe("UC");
  expect(upstreamResetReply("connection timeout", false).flag).toBe("UF");
  expect(upstreamResetReply("overflow", false).details).toBe(
    "upstream_reset_before_response_started{overflow}",
  );
});
