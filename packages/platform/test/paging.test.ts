import { describe, expect, it } from "vitest";
import { z } from "zod";
import { decodeCursor, encodeCursor, pageSizeOf } from "../src/index.js";
import { domainError } from "../src/testing/index.js";

const limits = { default: 20, max: 100 };
const cursor = z.object({ after: z.string(), n: z.number() });
const notOurs = "page_token is not ours";

describe("pageSizeOf", () => {
  it("uses the default for 0 and allows up to the maximum", () => {
    expect(pageSizeOf(0, limits)).toBe(20);
    expect(pageSizeOf(1, limits)).toBe(1);
    expect(pageSizeOf(100, limits)).toBe(100);
    expect(pageSizeOf(0, { default: 5, max: 10 })).toBe(5);
  });

  it.each([-1, 101, 2.5, Number.NaN])("refuses %s as invalid_argument", (size) => {
    const error = domainError(() => pageSizeOf(size, limits));
    expect(error.kind).toBe("invalid_argument");
    expect(error.message).toBe(`page_size must be between 0 and 100, got ${size}`);
  });
});

describe("page cursors", () => {
  it("round-trip a value through an opaque base64url token", () => {
    const token = encodeCursor({ after: "MUG-BLUE", n: 3 });
    expect(token).toMatch(/^[A-Za-z0-9_-]+$/);
    expect(token).not.toContain("MUG-BLUE");
    expect(decodeCursor(token, cursor, notOurs)).toEqual({ after: "MUG-BLUE", n: 3 });
  });

  const b64 = (text: string) => Buffer.from(text).toString("base64url");
  const valid = encodeCursor({ after: "MUG-BLUE", n: 3 });
  it.each([
    ["characters outside base64url", "!!!!"],
    ["padding added", `${valid}=`],
    ["no JSON", b64("MUG-BLUE")],
    ["JSON null", b64("null")],
    ["another shape", b64(JSON.stringify({ before: "MUG-BLUE", n: 3 }))],
    ["extra fields", b64(JSON.stringify({ after: "MUG-BLUE", n: 3, admin: true }))],
    ["the keys in another order", b64(JSON.stringify({ n: 3, after: "MUG-BLUE" }))],
    ["other spacing", b64('{"after": "MUG-BLUE", "n": 3}')],
    ["a truncated token", valid.slice(0, -2)],
  ])("refuse %s with the caller's message", (_what, token) => {
    const error = domainError(() => decodeCursor(token, cursor, notOurs));
    expect(error.kind).toBe("invalid_argument");
    expect(error.message).toBe(notOurs);
  });
});
