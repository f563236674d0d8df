import { mkdtemp, rm } from "node:fs/promises";
import http from "node:http";
import type http2 from "node:http2";
import https from "node:https";
import { tmpdir } from "node:os";
import path from "node:path";
import {
  issueWorkloadCertificate,
  loadOrCreateCa,
  type WorkloadCertificate,
} from "../../src/identity/ca.js";
import { mutualTlsSession } from "../../src/identity/tls.js";

export const orderId = "spiffe://cluster.local/ns/shop/sa/order";
export const paymentId = "spiffe://cluster.local/ns/shop/sa/payment";

export interface Identities {
  order: WorkloadCertificate;
  payment: WorkloadCertificate;
  /** A certificate from a CA the mesh does not trust, with a mesh-looking id. */
  foreignOrder: WorkloadCertificate;
  cleanup(): Promise<void>;
}

export async function createIdentities(): Promise<Identities> {
  const root = await mkdtemp(path.join(tmpdir(), "thinmesh-identity-"));
  const ca = await loadOrCreateCa(path.join(root, "mesh-ca"));
  const foreignCa = await loadOrCreateCa(path.join(root, "foreign-ca"));
  return {
    order: await issueWorkloadCertificate(ca, { spiffeId: orderId }),
    payment: await issueWorkloadCertificate(ca, { spiffeId: paymentId }),
    foreignOrder: await issueWorkloadCertificate(foreignCa, { spiffeId: orderId }),
    cleanup: () => rm(root, { recursive: true, force: true }),
  };
}

export interface Answer {
  status: number;
  body: string;
}

/** GET over HTTP/2 and mutual TLS, as an outbound sidecar would send it. */
export function getOverMutualTls(
  port: number,
  cert: WorkloadCertificate,
  expectedSpiffeIds?: string[],
  headers: http2.OutgoingHttpHeaders = {},
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const session = mutualTlsSession({ host: "127.0.0.1", port, cert, expectedSpiffeIds });
    session.on("error", reject);
    const stream = session.request({ ":path": "/who", ...headers });
    stream.on("error", reject);
    let status = 0;
    let body = "";
    stream.on("response", (h) => {
      status = Number(h[":status"]);
    });
    stream.setEncoding("utf8");
    stream.on("data", (chunk: string) => {
      body += chunk;
    });
    stream.on("end", () => {
      session.close();
      resolve({ status, body });
    });
  });
}

/** GET over HTTP/1.1 with TLS; cert undefined sends no client certificate. */
export function getOverHttpsH1(
  port: number,
  caPem: string,
  cert: WorkloadCertificate | undefined,
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const request = https.request(
      {
        host: "127.0.0.1",
        port,
        path: "/who",
        ca: caPem,
        key: cert?.keyPem,
        cert: cert?.certPem,
        // Passed on to tls.connect; the typings of https.request leave it out.
        ALPNProtocols: ["http/1.1"],
        agent: false,
        // Mesh certificates name no host; the identity checks are tested elsewhere.
        checkServerIdentity: () => undefined,
      } as https.RequestOptions,
      (response) => collect(response, resolve, reject),
    );
    request.on("error", reject);
    request.end();
  });
}

export function getPlaintextH1(
  port: number,
  headers: http.OutgoingHttpHeaders = {},
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const request = http.request(
      { host: "127.0.0.1", port, path: "/who", agent: false, headers },
      (response) => collect(response, resolve, reject),
    );
    request.on("error", reject);
    request.end();
  });
}

function collect(
  response: http.IncomingMessage,
  resolve: (answer: Answer) => void,
  reject: (error: Error) => void,
) {
  let body = "";
  response.setEncoding("utf8");
  response.on("data", (chunk: string) => {
    body += chunk;
  });
  response.on("end", () => resolve({ status: response.statusCode ?? 0, body }));
  response.on("error", reject);
}
