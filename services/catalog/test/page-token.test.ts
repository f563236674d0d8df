import { domainError } from "@thinmesh/platform/testing";
import { describe, expect, it } from "vitest";
import {
  decodePageToken,
  defaultPageSize,
  encodePageToken,
  maxPageSize,
  pageSizeOf,
} from "../src/domain/page-token.js";

const notOurs = "page_token is not a token from a previous ListProducts response";

const rejection = (token: string) => domainError(() => decodePageToken(token));

describe("page tokens", () => {
  it.each(["AB", "MUG-BLUE", "0-0", "Z".repeat(32)])("round-trips the last SKU %s", (sku) => {
    const token = encodePageToken(sku);
    expect(token).toMatch(/^[A-Za-z0-9_-]+$/);
    expect(token).not.toContain(sku);
    expect(decodePageToken(token)).toBe(sku);
  });

  const b64 = (text: string) => Buffer.from(text).toString("base64url");
  const valid = encodePageToken("MUG-BLUE");
  it.each([
    ["plain text", "hello"],
    ["characters outside base64url", "!!!!"],
    ["the SKU itself", "MUG-BLUE"],
    ["base64url of something else", b64("MUG-BLUE")],
    ["JSON of another shape", b64(JSON.stringify({ before: "MUG-BLUE" }))],
    ["JSON null", b64("null")],
    ["a SKU that cannot exist", b64(JSON.stringify({ after: "mug blue" }))],
    ["extra fields", b64(JSON.stringify({ after: "MUG-BLUE", admin: true }))],
    ["padding added", `${valid}=`],
    ["a truncated token", valid.slice(0, -2)],
    [
      "a token with a changed character",
      `${valid.slice(0, 5)}${valid[5] === "A" ? "B" : "A"}${valid.slice(6)}`,
    ],
  ])("rejects %s", (_what, token) => {
    const error = rejection(token);
    expect(error.kind).toBe("invalid_argument");
    expect(error.message).toBe(notOurs);
  });

  it("sizes pages: 0 means the default, the maximum is enforced", () => {
    expect(pageSizeOf(0)).toBe(defaultPageSize);
    expect(defaultPageSize).toBe(20);
    expect(pageSizeOf(1)).toBe(1);
    expect(pageSizeOf(maxPageSize)).toBe(100);
    for (const bad of [-1, 101, 2.5]) {
      expect(() => pageSizeOf(bad)).toThrow(/page_size must be between 0 and 100/);
    }
  });
});
