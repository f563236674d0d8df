import { randomUUID } from "node:crypto";
import { domainError as rejection } from "@thinmesh/platform/testing";
import { describe, expect, it } from "vitest";
import { decodePageToken, encodePageToken, pageSizeOf } from "../src/domain/page-token.js";

const alice = { userId: randomUUID() };
const bob = { userId: randomUUID() };
const cursor = { createdAt: new Date("2025-03-04T05:06:07.089Z"), id: randomUUID() };

describe("ListOrders page tokens", () => {
  it("round-trip the cursor for the same listing and stay within the contract's 256 chars", () => {
    const long = { userId: "x".repeat(500) };
    const token = encodePageToken(long, cursor);
    expect(token.length).toBeLessThanOrEqual(256);
    expect(decodePageToken(long, token)).toEqual(cursor);
    expect(decodePageToken("all", encodePageToken("all", cursor))).toEqual(cursor);
  });

  it("do not reveal the user id", () => {
    const token = encodePageToken(alice, cursor);
    expect(Buffer.from(token, "base64url").toString()).not.toContain(alice.userId);
  });

  it.each([
    ["another user's", () => encodePageToken(alice, cursor), bob],
    ["an admin's, used by a customer", () => encodePageToken("all", cursor), alice],
    ["a customer's, used by an admin", () => encodePageToken(alice, cursor), "all" as const],
  ])("refuse %s token", (_what, token, scope) => {
    const error = rejection(() => decodePageToken(scope, token()));
    expect(error.kind).toBe("invalid_argument");
    expect(error.message).toMatch(/different listing/);
  });

  it.each([
    ["garbage", "not a token!"],
    ["base64 of nonsense", Buffer.from("nonsense").toString("base64url")],
    [
      "a token with extra fields",
      Buffer.from(
        JSON.stringify({
          ...JSON.parse(Buffer.from(encodePageToken(alice, cursor), "base64url").toString()),
          x: 1,
        }),
      ).toString("base64url"),
    ],
    [
      "a token with a bad date",
      Buffer.from(
        JSON.stringify({
          ...JSON.parse(Buffer.from(encodePageToken(alice, cursor), "base64url").toString()),
          c: "yesterday",
        }),
      ).toString("base64url"),
    ],
  ])("refuse %s", (_what, token) => {
    expect(rejection(() => decodePageToken(alice, token)).kind).toBe("invalid_argument");
  });

  it("use 20 for a page size of 0 and refuse more than 100", () => {
    expect(pageSizeOf(0)).toBe(20);
    expect(pageSizeOf(100)).toBe(100);
    expect(rejection(() => pageSizeOf(101)).kind).toBe("invalid_argument");
    expect(rejection(() => pageSizeOf(-1)).kind).toBe("invalid_argument");
  });
});
