import { callerPrincipal } from "@thinmesh/platform";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createInboundListener, type InboundPeer } from "../../src/identity/listener.js";
import { formatXfcc, forwardClientCert, parseXfcc, xfccHeader } from "../../src/identity/xfcc.js";
import {
  createIdentities,
  getOverMutualTls,
  getPlaintextH1,
  type Identities,
  orderId,
  paymentId,
} from "./fixtures.js";

const hash = "468ed33be74eee6556d90c0149c1309e9ba61d6425303443c0748a02dd8de688";
/** An element claiming the admin identity, as a caller without a certificate might send it. */
const forged = `By=${paymentId};Hash=${hash};Subject="";URI=spiffe://cluster.local/ns/shop/sa/admin`;
const mtlsPeer: InboundPeer = {
  tls: true,
  spiffeId: orderId,
  principal: "cluster.local/ns/shop/sa/order",
  certificateHash: hash,
};

describe("formatXfcc and parseXfcc", () => {
  it("write Istio's inbound element exactly as Envoy does, and read it back", () => {
    const element = { by: paymentId, hash, subject: "", uri: orderId };
    const header = formatXfcc([element]);
    expect(header).toBe(`By=${paymentId};Hash=${hash};Subject="";URI=${orderId}`);
    expect(parseXfcc(header)).toEqual([element]);
  });

  it("round-trip several elements, quoted values with separators and quotes, and DNS names", () => {
    const elements = [
      {
        by: "http://frontend.lyft.com",
        hash,
        subject: '/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test "Client", Inc; x=y',
        uri: "http://testclient.lyft.com",
        dns: ["lyft.com", "www.lyft.com"],
      },
      { by: "http://backend.lyft.com", hash, uri: "http://frontend.lyft.com" },
    ];
    const header = formatXfcc(elements);
    expect(header).toContain(
      'Subject="/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test \\"Client\\", Inc; x=y"',
    );
    expect(header).toContain(";DNS=lyft.com;DNS=www.lyft.com,By=http://backend.lyft.com;");
    expect(parseXfcc(header)).toEqual(elements);
  });

  it("read Envoy's documented examples, keys in any case", () => {
    expect(
      parseXfcc(
        `By=http://frontend.lyft.com;Hash=${hash};Subject="/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client";URI=http://testclient.lyft.com`,
      ),
    ).toEqual([
      {
        by: "http://frontend.lyft.com",
        hash,
        subject: "/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client",
        uri: "http://testclient.lyft.com",
      },
    ]);
    expect(parseXfcc(`by=a;HASH=${hash};uri=b, By=c;URI=d`)).toEqual([
      { by: "a", hash, uri: "b" },
      { by: "c", uri: "d" },
    ]);
  });

  it("refuses a malformed header", () => {
    expect(() => parseXfcc("By=a;Hash")).toThrow(/not a key=value pair/);
    expect(() => parseXfcc('By=a;Subject="open')).toThrow(/unterminated quote/);
    expect(() => parseXfcc('Subject="a"b')).toThrow(/text after its closing quote/);
  });
});

describe("forwardClientCert", () => {
  it("APPEND_FORWARD (Istio's inbound) appends this hop's element to what the client sent", () => {
    const own = `By=${paymentId};Hash=${hash};Subject="";URI=${orderId}`;
    expect(forwardClientCert(undefined, mtlsPeer, paymentId)).toBe(own);
    expect(forwardClientCert("By=x;URI=y", mtlsPeer, paymentId, "APPEND_FORWARD")).toBe(
      `By=x;URI=y,${own}`,
    );
    expect(forwardClientCert(forged, mtlsPeer, paymentId, "SANITIZE_SET")).toBe(own);
  });

  it("strips the client's header on a plaintext connection in every mode but ALWAYS_FORWARD_ONLY", () => {
    const plaintext: InboundPeer = { tls: false };
    for (const mode of ["APPEND_FORWARD", "SANITIZE_SET", "FORWARD_ONLY", "SANITIZE"] as const) {
      expect(forwardClientCert(forged, plaintext, paymentId, mode)).toBeUndefined();
    }
    expect(forwardClientCert(forged, plaintext, paymentId, "ALWAYS_FORWARD_ONLY")).toBe(forged);
    expect(forwardClientCert(forged, mtlsPeer, paymentId, "FORWARD_ONLY")).toBe(forged);
    expect(forwardClientCert(forged, mtlsPeer, paymentId, "SANITIZE")).toBeUndefined();
  });
});

describe("through an inbound listener to the app", () => {
  let ids: Identities;
  let listener: ReturnType<typeof createInboundListener>;
  let port: number;
  beforeAll(async () => {
    ids = await createIdentities();
    // Stands in for the sidecar and its app: the header the app would get, then what the app
    // reads from it with packages/platform's callerPrincipal.
    listener = createInboundListener({
      mode: () => "PERMISSIVE",
      certificate: () => ids.payment,
      handler(req, res, peer) {
        const incoming = req.headers[xfccHeader];
        const forwarded = forwardClientCert(
          Array.isArray(incoming) ? incoming.join(",") : incoming,
          peer,
          paymentId,
        );
        const headers = new Headers(forwarded === undefined ? {} : { [xfccHeader]: forwarded });
        res.end(JSON.stringify({ forwarded, caller: callerPrincipal(headers) ?? null }));
      },
    });
    port = (await listener.listen(0, "127.0.0.1")).port;
  });
  afterAll(async () => {
    await listener.close(1000);
    await ids.cleanup();
  });

  it("hands the app the mTLS caller's identity, after any element the caller forwarded", async () => {
    const answer = await getOverMutualTls(port, ids.order, [paymentId], {
      [xfccHeader]:
        "By=spiffe://cluster.local/ns/shop/sa/order;URI=spiffe://cluster.local/ns/shop/sa/admin",
    });
    const { forwarded, caller } = JSON.parse(answer.body);
    expect(caller).toBe("cluster.local/ns/shop/sa/order");
    const elements = parseXfcc(forwarded);
    expect(elements).toHaveLength(2);
    expect(elements[1]).toMatchObject({ by: paymentId, uri: orderId, subject: "" });
    expect(elements[1]?.hash).toMatch(/^[0-9a-f]{64}$/);
  });

  it("drops an identity a plaintext caller forged", async () => {
    const answer = await getPlaintextH1(port, { [xfccHeader]: forged });
    expect(JSON.parse(answer.body)).toEqual({ caller: null });
  });
});
