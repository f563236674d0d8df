import { describe, expect, it } from "vitest";
import { callerPrincipal, parseXfcc } from "../src/index.js";

const hash = "468ed33be74eee6556d90c0149c1309e9ba61d6425303443c0748a02dd8de688";
const headersWith = (xfcc: string) => new Headers({ "x-forwarded-client-cert": xfcc });

describe("callerPrincipal", () => {
  it("reads the principal from the URI Istio's inbound sidecar appended", () => {
    const xfcc = `By=spiffe://cluster.local/ns/shop/sa/payment;Hash=${hash};Subject="";URI=spiffe://cluster.local/ns/shop/sa/order`;
    expect(callerPrincipal(headersWith(xfcc))).toBe("cluster.local/ns/shop/sa/order");
  });

  it("takes the LAST element: the immediate caller, not a hop further away", () => {
    const xfcc =
      "By=spiffe://cluster.local/ns/shop/sa/order;URI=spiffe://cluster.local/ns/shop/sa/admin," +
      'By=spiffe://cluster.local/ns/shop/sa/payment;Subject="";URI=spiffe://cluster.local/ns/shop/sa/order';
    expect(callerPrincipal(headersWith(xfcc))).toBe("cluster.local/ns/shop/sa/order");
    // Repeated headers arrive joined with ", ".
    const headers = new Headers();
    headers.append("x-forwarded-client-cert", "By=a;URI=spiffe://cluster.local/ns/shop/sa/admin");
    headers.append("x-forwarded-client-cert", "By=b;URI=spiffe://cluster.local/ns/shop/sa/catalog");
    expect(callerPrincipal(headers)).toBe("cluster.local/ns/shop/sa/catalog");
  });

  it("is undefined with no header, a malformed one, or a last element without a SPIFFE URI", () => {
    expect(callerPrincipal(new Headers())).toBeUndefined();
    expect(
      callerPrincipal(headersWith('By=a;URI="spiffe://cluster.local/ns/shop/sa/order')),
    ).toBeUndefined();
    expect(
      callerPrincipal(headersWith("By=a;URI=spiffe://cluster.local/ns/shop/sa/order,By=b")),
    ).toBeUndefined();
    expect(callerPrincipal(headersWith("By=a;URI=http://testclient.lyft.com"))).toBeUndefined();
    expect(callerPrincipal(headersWith("By=a;URI=spiffe://"))).toBeUndefined();
  });
});

describe("parseXfcc", () => {
  it("unquotes values and keeps escaped quotes, commas and semicolons inside them", () => {
    expect(parseXfcc('Subject="CN=a\\"b\\", c; d";URI=u')).toEqual([
      { subject: 'CN=a"b", c; d', uri: "u" },
    ]);
  });
});
