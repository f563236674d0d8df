import type { AddressInfo } from "node:net";
import tls from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { WorkloadCertificate } from "../../src/identity/ca.js";
import {
  connectMutualTls,
  mutualTlsSession,
  namespaceOf,
  PeerIdentityError,
  peerSpiffeId,
  principalOf,
  serverTlsOptions,
} from "../../src/identity/tls.js";
import { createIdentities, type Identities, orderId, paymentId } from "./fixtures.js";

let ids: Identities;
beforeAll(async () => {
  ids = await createIdentities();
});
afterAll(async () => {
  await ids.cleanup();
});

/** A bare TLS server with `cert` that reports the client's SPIFFE id and closes. */
async function tlsServer(cert: WorkloadCertificate) {
  const clients: (string | undefined)[] = [];
  const server = tls.createServer(serverTlsOptions(cert), (socket) => {
    clients.push(peerSpiffeId(socket));
    socket.end("hello");
  });
  server.on("tlsClientError", () => {});
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, port: (server.address() as AddressInfo).port, clients };
}

function handshake(socket: tls.TLSSocket) {
  return new Promise<tls.TLSSocket>((resolve, reject) => {
    socket.on("secureConnect", () => resolve(socket));
    socket.on("error", reject);
  });
}

describe("connectMutualTls", () => {
  it("connects to a server with an expected SPIFFE id, over h2, presenting the client's identity", async () => {
    const { server, port, clients } = await tlsServer(ids.payment);
    const socket = await handshake(
      connectMutualTls({
        host: "127.0.0.1",
        port,
        cert: ids.order,
        expectedSpiffeIds: [paymentId],
      }),
    );
    expect(peerSpiffeId(socket)).toBe(paymentId);
    expect(socket.alpnProtocol).toBe("h2");
    socket.setEncoding("utf8");
    let received = "";
    socket.on("data", (chunk: string) => {
      received += chunk;
    });
    await new Promise((resolve) => socket.on("end", resolve));
    expect(received).toBe("hello");
    expect(clients).toEqual([orderId]);
    server.close();
  });

  it("refuses a server whose SAN is not one of the expected identities", async () => {
    const { server, port } = await tlsServer(ids.payment);
    const error = await handshake(
      connectMutualTls({
        host: "127.0.0.1",
        port,
        cert: ids.order,
        expectedSpiffeIds: ["spiffe://cluster.local/ns/shop/sa/catalog", orderId],
      }),
    ).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PeerIdentityError);
    expect((error as PeerIdentityError).spiffeId).toBe(paymentId);
    expect((error as Error).message).toMatch(
      /is spiffe:\/\/cluster\.local\/ns\/shop\/sa\/payment, not one of the expected identities/,
    );
    server.close();
  });

  it("refuses a server whose certificate another CA signed, whatever its SAN", async () => {
    const { server, port } = await tlsServer(ids.foreignOrder);
    await expect(
      handshake(
        connectMutualTls({
          host: "127.0.0.1",
          port,
          cert: ids.order,
          expectedSpiffeIds: [orderId],
        }),
      ),
    ).rejects.toThrow(/self-signed certificate in certificate chain|unable to verify/);
    server.close();
  });

  it("accepts any identity the CA signed when no SANs are expected", async () => {
    const { server, port } = await tlsServer(ids.payment);
    const socket = await handshake(connectMutualTls({ host: "127.0.0.1", port, cert: ids.order }));
    expect(peerSpiffeId(socket)).toBe(paymentId);
    socket.destroy();
    server.close();
  });
});

describe("mutualTlsSession", () => {
  it("reports a refused identity as the session's error", async () => {
    const { server, port } = await tlsServer(ids.payment);
    const session = mutualTlsSession({
      host: "127.0.0.1",
      port,
      cert: ids.order,
      expectedSpiffeIds: [orderId],
    });
    const error = await new Promise((resolve) => session.on("error", resolve));
    expect(error).toBeInstanceOf(PeerIdentityError);
    session.destroy();
    server.close();
  });
});

describe("principalOf and namespaceOf", () => {
  it("turn a SPIFFE id into Istio's principal and read its namespace", () => {
    expect(principalOf(orderId)).toBe("cluster.local/ns/shop/sa/order");
    expect(namespaceOf("cluster.local/ns/shop/sa/order")).toBe("shop");
    expect(namespaceOf("cluster.local/sa/order")).toBeUndefined();
    expect(namespaceOf("cluster.local/ns/shop/sa/order/extra")).toBeUndefined();
    expect(() => principalOf("cluster.local/ns/shop/sa/order")).toThrow(/is not a SPIFFE id/);
  });
});
