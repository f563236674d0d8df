import http2 from "node:http2";
import { connect as connectTcp } from "node:net";
import tls from "node:tls";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { WorkloadCertificate } from "../../src/identity/ca.js";
import {
  createInboundListener,
  type InboundListener,
  type InboundPeer,
  type PeerAuthenticationMode,
  type RefusedConnection,
} from "../../src/identity/listener.js";
import {
  createIdentities,
  getOverHttpsH1,
  getOverMutualTls,
  getPlaintextH1,
  type Identities,
  orderId,
  paymentId,
} from "./fixtures.js";

let ids: Identities;
beforeAll(async () => {
  ids = await createIdentities();
});
afterAll(async () => {
  await ids.cleanup();
});

interface Running {
  listener: InboundListener;
  port: number;
  refused: RefusedConnection[];
  setMode(mode: PeerAuthenticationMode): void;
  setCertificate(cert: WorkloadCertificate): void;
}
const running: Running[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((r) => r.listener.close(1000)));
});

/** A payment inbound listener whose handler answers with the peer it was given. */
async function start(initialMode: PeerAuthenticationMode): Promise<Running> {
  let mode = initialMode;
  let certificate = ids.payment;
  const refused: RefusedConnection[] = [];
  const listener = createInboundListener({
    mode: () => mode,
    certificate: () => certificate,
    handler(req, res, peer: InboundPeer) {
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify({ peer, httpVersion: req.httpVersion }));
    },
    onRefused: (info) => refused.push(info),
  });
  const { port } = await listener.listen(0, "127.0.0.1");
  const r: Running = {
    listener,
    port,
    refused,
    setMode: (next) => {
      mode = next;
    },
    setCertificate: (next) => {
      certificate = next;
    },
  };
  running.push(r);
  return r;
}

function h2cGet(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    session.on("error", reject);
    const stream = session.request({ ":path": "/who" });
    stream.on("error", reject);
    stream.on("response", (headers) => {
      session.close();
      resolve(Number(headers[":status"]));
    });
    stream.end();
  });
}

/**
 * Sends bytes on a raw TCP connection, then waits for the server to close (`wait`), half-closes
 * (`end`) or resets (`reset`); resolves with what came back and how it ended.
 */
function rawExchange(
  port: number,
  bytes: Buffer | string,
  then: "wait" | "end" | "reset" = "wait",
) {
  return new Promise<{ received: string; error?: string }>((resolve) => {
    const socket = connectTcp(port, "127.0.0.1", () => {
      socket.write(bytes);
      if (then === "end") socket.end();
      if (then === "reset") setTimeout(() => socket.resetAndDestroy(), 20);
    });
    let received = "";
    socket.setEncoding("latin1");
    socket.on("data", (chunk: string) => {
      received += chunk;
    });
    socket.on("error", (error: NodeJS.ErrnoException) => resolve({ received, error: error.code }));
    socket.on("close", () => resolve({ received }));
  });
}

/** A TLS client that trusts the mesh CA and presents `cert` (or no certificate). */
function tlsHandshake(port: number, caPem: string, cert?: WorkloadCertificate) {
  return new Promise<void>((resolve, reject) => {
    const socket = tls.connect({
      host: "127.0.0.1",
      port,
      ca: caPem,
      key: cert?.keyPem,
      cert: cert?.certPem,
      checkServerIdentity: () => undefined,
    });
    socket.on("secureConnect", () => {
      // TLS 1.3 finishes the client's side before the server has checked its certificate:
      // only the server's answer (data, or an alert) tells.
      socket.write("GET /who HTTP/1.1\r\nhost: payment\r\n\r\n");
    });
    socket.on("data", () => {
      socket.destroy();
      resolve();
    });
    socket.on("error", reject);
    socket.on("close", () => reject(new Error("closed without an answer")));
  });
}

describe("STRICT", () => {
  it("resets plaintext HTTP/1.1 and h2c connections before any HTTP answer, and counts them", async () => {
    const { port, listener, refused } = await start("STRICT");
    await expect(getPlaintextH1(port)).rejects.toMatchObject({ code: "ECONNRESET" });
    await expect(h2cGet(port)).rejects.toMatchObject({ code: "ECONNRESET" });
    const raw = await rawExchange(port, "GET /who HTTP/1.1\r\nhost: payment\r\n\r\n");
    expect(raw).toEqual({ received: "", error: "ECONNRESET" });
    expect(listener.stats()).toMatchObject({ refusedPlaintext: 3, plaintext: 0 });
    expect(refused.map((r) => [r.reason, r.mode])).toEqual([
      ["plaintext", "STRICT"],
      ["plaintext", "STRICT"],
      ["plaintext", "STRICT"],
    ]);
    expect(refused[0]?.remoteAddress).toBe("127.0.0.1");
  });

  it("serves mutual TLS over HTTP/2 and HTTP/1.1 and hands the handler the caller's identity", async () => {
    const { port, listener } = await start("STRICT");
    const h2 = await getOverMutualTls(port, ids.order, [paymentId]);
    expect(h2.status).toBe(200);
    const seen = JSON.parse(h2.body) as { peer: InboundPeer; httpVersion: string };
    expect(seen.httpVersion).toBe("2.0");
    expect(seen.peer).toMatchObject({
      tls: true,
      spiffeId: orderId,
      principal: "cluster.local/ns/shop/sa/order",
    });
    expect(seen.peer.certificateHash).toMatch(/^[0-9a-f]{64}$/);

    const h1 = await getOverHttpsH1(port, ids.order.caPem, ids.order);
    expect(h1.status).toBe(200);
    expect(JSON.parse(h1.body)).toMatchObject({ httpVersion: "1.1", peer: { spiffeId: orderId } });
    expect(listener.stats()).toMatchObject({ mutualTls: 2, failedHandshakes: 0 });
  });

  it("gives the certificate's SHA-256 as certificateHash", async () => {
    const { port } = await start("STRICT");
    const { createHash, X509Certificate } = await import("node:crypto");
    const expected = createHash("sha256")
      .update(new X509Certificate(ids.order.certPem).raw)
      .digest("hex");
    const answer = await getOverMutualTls(port, ids.order);
    expect(JSON.parse(answer.body).peer.certificateHash).toBe(expected);
  });

  it("refuses at the handshake a client without a certificate, or with one from another CA", async () => {
    const { port, listener, refused } = await start("STRICT");
    await tlsHandshake(port, ids.order.caPem, ids.order); // the control: a mesh certificate
    await expect(tlsHandshake(port, ids.order.caPem)).rejects.toThrow();
    await expect(tlsHandshake(port, ids.order.caPem, ids.foreignOrder)).rejects.toThrow();
    expect(listener.stats()).toMatchObject({ failedHandshakes: 2, mutualTls: 1 });
    expect(refused.map((r) => r.reason)).toEqual(["tls-handshake", "tls-handshake"]);
    expect(refused[0]?.detail).toMatch(/presented no certificate/);
    expect(refused[1]?.detail).toMatch(/not signed by the mesh CA/);
  });

  it("reads the mode per connection: a switch to PERMISSIVE applies to the next connection", async () => {
    const r = await start("STRICT");
    await expect(getPlaintextH1(r.port)).rejects.toMatchObject({ code: "ECONNRESET" });
    r.setMode("PERMISSIVE");
    expect((await getPlaintextH1(r.port)).status).toBe(200);
    r.setMode("STRICT");
    await expect(getPlaintextH1(r.port)).rejects.toMatchObject({ code: "ECONNRESET" });
  });

  it("presents a reissued certificate from the next connection on (rotation)", async () => {
    const r = await start("STRICT");
    const servedCertificate = () =>
      new Promise<string>((resolve, reject) => {
        const socket = tls.connect({
          host: "127.0.0.1",
          port: r.port,
          ca: ids.order.caPem,
          key: ids.order.keyPem,
          cert: ids.order.certPem,
          checkServerIdentity: () => undefined,
        });
        socket.on("secureConnect", () => {
          const fingerprint = socket.getPeerCertificate().fingerprint256;
          socket.destroy();
          resolve(fingerprint);
        });
        socket.on("error", reject);
      });
    const before = await servedCertificate();
    // The order certificate stands in for a reissued payment one: a different key and cert.
    r.setCertificate(ids.order);
    const after = await servedCertificate();
    expect(after).not.toBe(before);
    const { X509Certificate } = await import("node:crypto");
    expect(after).toBe(new X509Certificate(ids.order.certPem).fingerprint256);
  });
});

describe("PERMISSIVE", () => {
  it("serves plaintext HTTP/1.1, h2c and mutual TLS on one port", async () => {
    const { port, listener } = await start("PERMISSIVE");
    const h1 = await getPlaintextH1(port);
    expect(h1.status).toBe(200);
    expect(JSON.parse(h1.body)).toEqual({ peer: { tls: false }, httpVersion: "1.1" });
    expect(await h2cGet(port)).toBe(200);
    const mtls = await getOverMutualTls(port, ids.order);
    expect(JSON.parse(mtls.body).peer.spiffeId).toBe(orderId);
    expect(listener.stats()).toMatchObject({ plaintext: 2, mutualTls: 1, refusedPlaintext: 0 });
  });

  it("still refuses a TLS client without a mesh certificate", async () => {
    const { port, listener, refused } = await start("PERMISSIVE");
    await expect(tlsHandshake(port, ids.order.caPem, ids.foreignOrder)).rejects.toThrow();
    expect(listener.stats()).toMatchObject({ failedHandshakes: 1, mutualTls: 0 });
    expect(refused[0]?.detail).toMatch(/not signed by the mesh CA/);
  });
});

describe("DISABLE", () => {
  it("serves plaintext and resets TLS connections, as Istio's plaintext-only filter chain", async () => {
    const { port, listener, refused } = await start("DISABLE");
    expect((await getPlaintextH1(port)).status).toBe(200);
    await expect(tlsHandshake(port, ids.order.caPem, ids.order)).rejects.toMatchObject({
      code: "ECONNRESET",
    });
    expect(listener.stats()).toMatchObject({ mutualTls: 0, plaintext: 1, refusedTls: 1 });
    expect(refused.map((r) => [r.reason, r.mode])).toEqual([["tls", "DISABLE"]]);
  });
});

describe("client misbehaviour", () => {
  it("survives garbage, half a ClientHello, early disconnects and resets, and keeps serving", async () => {
    for (const mode of ["STRICT", "PERMISSIVE"] as const) {
      const { port } = await start(mode);
      const garbage = Buffer.from([0x16, 0x03, 0x01, 0xff, 0xff, 0x00, 0x01, 0x02, 0xde, 0xad]);
      await rawExchange(port, garbage, "end");
      await rawExchange(port, garbage, "reset");
      await rawExchange(port, garbage.subarray(0, 3), "reset");
      await rawExchange(port, "\x00\x01\x02 not http\r\n\r\n");
      await rawExchange(port, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n garbage frames", "end");
      await rawExchange(port, "GET /who HTTP/1.1\r\n", "reset");
      // Connect and leave at once, before sending anything.
      await new Promise<void>((resolve) => {
        const socket = connectTcp(port, "127.0.0.1", () => socket.destroy());
        socket.on("close", () => resolve());
      });
      // Connect and reset at once, before sending anything.
      await new Promise<void>((resolve) => {
        const socket = connectTcp(port, "127.0.0.1", () =>
          setTimeout(() => socket.resetAndDestroy(), 20),
        );
        socket.on("close", () => setTimeout(resolve, 50));
      });
      // A client that gives up in the middle of the TLS handshake.
      await new Promise<void>((resolve) => {
        const socket = tls.connect({ host: "127.0.0.1", port, rejectUnauthorized: false });
        socket.on("error", () => {});
        socket.once("connect", () => setTimeout(() => socket.destroy(), 1));
        socket.on("close", () => resolve());
      });
      expect((await getOverMutualTls(port, ids.order)).status).toBe(200);
    }
  });

  it("answers garbage on a plaintext PERMISSIVE connection with 400, as an HTTP parser does", async () => {
    const { port } = await start("PERMISSIVE");
    const answer = await rawExchange(port, "\x00\x01\x02 not http\r\n\r\n");
    expect(answer.received).toMatch(/^HTTP\/1\.1 400 /);
  });
});

describe("close", () => {
  it("lets an in-flight request finish, then stops accepting", async () => {
    let release: () => void = () => {};
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    const listener = createInboundListener({
      mode: () => "STRICT",
      certificate: () => ids.payment,
      async handler(_req, res) {
        await released;
        res.end("done");
      },
    });
    const { port } = await listener.listen(0, "127.0.0.1");
    const answer = getOverMutualTls(port, ids.order);
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(listener.inFlight()).toBe(1);
    const closed = listener.close(5000);
    setTimeout(release, 100);
    expect(await answer).toEqual({ status: 200, body: "done" });
    await closed;
    expect(await rawExchange(port, "")).toMatchObject({ error: "ECONNREFUSED" });
  });
});
