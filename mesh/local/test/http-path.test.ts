import { describe, expect, it } from "vitest";
import { normalizeRequestTarget } from "../src/http-path.js";

const deliver = "/shop.events.v1.EventSinkService/Deliver";
const order = "/shop.order.v1.OrderService";

describe("request-target normalisation (Istio BASE, stricter where BASE is ambiguous)", () => {
  it.each([
    // dot segments, in every spelling
    [`${order}/..${deliver}`, deliver],
    [`${order}/%2e%2e${deliver}`, deliver],
    [`${order}/%2E%2E${deliver}`, deliver],
    [`${order}/%2E.${deliver}`, deliver],
    [`${order}/.%2e${deliver}`, deliver],
    [`${order}/..\\shop.events.v1.EventSinkService\\Deliver`, deliver],
    [`${order}/x/../..${deliver}`, deliver],
    [`/a/b/../..${deliver}`, deliver],
    [`${order}/./GetOrder`, `${order}/GetOrder`],
    [`${order}/GetOrder/.`, `${order}/GetOrder/`],
    [`${order}/GetOrder/..`, `${order}/`],
    ["/", "/"],
    ["/a/b/", "/a/b/"],
    // slashes merged, backslashes translated
    [`/${order}//GetOrder`, `${order}/GetOrder`],
    [`${order}\\GetOrder`, `${order}/GetOrder`],
    // unreserved escapes decoded, others uppercased, forbidden characters escaped
    [`${order}/%47et%4f%72der`, `${order}/GetOrder`],
    ["/%7e%5f%2d%30", "/~_-0"],
    ["/a%3ab%40", "/a%3Ab%40"],
    ["/a|b{c}", "/a%7Cb%7Bc%7D"],
    // decoded once only: %25 is "%", so %252e stays and never becomes "."
    ["/a/%252e%252e/b", "/a/%252e%252e/b"],
  ])("%s → %s", (target, path) => {
    expect(normalizeRequestTarget(target)).toEqual({ ok: true, path, query: "", target: path });
  });

  it("keeps the query untouched and forwards path + query", () => {
    expect(normalizeRequestTarget(`${order}/./GetOrder?next=/../x&%2e=%2F`)).toEqual({
      ok: true,
      path: `${order}/GetOrder`,
      query: "?next=/../x&%2e=%2F",
      target: `${order}/GetOrder?next=/../x&%2e=%2F`,
    });
  });

  it.each([
    [`${order}%2f..%2f${deliver}`, /escaped slash/],
    [`${order}/..%2F${deliver}`, /escaped slash/],
    [`${order}/..%5c${deliver}`, /escaped slash/],
    [`${order}/..%5C${deliver}`, /escaped slash/],
    ["/..", /above the root/],
    [`/x/../..${deliver}`, /above the root/],
    ["/%2e%2e/x", /above the root/],
    ["/a%00b", /%00/],
    ["/a%zz", /invalid percent-encoding/],
    ["/a%4", /invalid percent-encoding/],
    ["/a%", /invalid percent-encoding/],
    ["*", /asterisk-form/],
    ["http://catalog.shop/shop.catalog.v1.CatalogService/ListProducts", /absolute-form/],
    ["catalog.shop:8080", /absolute-form/],
    ["", /empty/],
    ["/a#b", /fragment/],
    ["/a?b#c", /fragment/],
    ["/a\u0000b", /control character/],
    ["/a\rb", /control character/],
    ["/a?b\nc", /control character/],
    ["/a\u007fb", /control character/],
    ["/é", /non-ASCII/],
  ])("refuses %j", (target, reason) => {
    const result = normalizeRequestTarget(target);
    expect(result.ok).toBe(false);
    expect(result.ok === false && result.reason).toMatch(reason);
  });
});
