import { describe, expect, it } from "vitest";
import {
  defaultScryptParams,
  hashPassword,
  needsRehash,
  parsePasswordHash,
  verifyPassword,
} from "../src/domain/passwords.js";

describe("password hashing", () => {
  it("stores the scrypt parameters, salt and hash in the string", async () => {
    const stored = await hashPassword("correct horse battery");
    const [scheme, N, r, p, salt, hash, ...rest] = stored.split("$");
    expect([scheme, N, r, p]).toEqual(["scrypt", "32768", "8", "1"]);
    expect(Buffer.from(salt!, "base64url")).toHaveLength(16);
    expect(Buffer.from(hash!, "base64url")).toHaveLength(32);
    expect(rest).toEqual([]);
    expect(parsePasswordHash(stored)?.params).toEqual(defaultScryptParams);
  });

  it("verifies the right password and only that one", async () => {
    const stored = await hashPassword("correct horse battery");
    expect(await verifyPassword("correct horse battery", stored)).toBe(true);
    expect(await verifyPassword("correct horse batterY", stored)).toBe(false);
    expect(await verifyPassword("", stored)).toBe(false);
  });

  it("salts: the same password hashes differently each time", async () => {
    const [a, b] = await Promise.all([
      hashPassword("same password"),
      hashPassword("same password"),
    ]);
    expect(a).not.toBe(b);
  });

  it("verifies hashes made with other parameters, and says when to rehash", async () => {
    const weaker = await hashPassword("old account", { N: 2 ** 12, r: 8, p: 1 });
    expect(weaker.startsWith("scrypt$4096$8$1$")).toBe(true);
    expect(await verifyPassword("old account", weaker)).toBe(true);
    expect(needsRehash(weaker)).toBe(true);
    expect(needsRehash(await hashPassword("new account"))).toBe(false);
  });

  it("rejects tampered and foreign hash strings instead of throwing", async () => {
    const stored = await hashPassword("tamper with me");
    const parts = stored.split("$");
    const flipped = [...parts.slice(0, 5), `${parts[5]!.slice(0, -2)}AA`].join("$");
    expect(await verifyPassword("tamper with me", flipped)).toBe(false);
    expect(await verifyPassword("tamper with me", stored.replace("$32768$", "$32769$"))).toBe(
      false,
    );
    expect(await verifyPassword("x", "$2b$10$abcdefghijklmnopqrstuv")).toBe(false);
    expect(await verifyPassword("x", "scrypt$1073741824$8$1$c2FsdA$aGFzaA")).toBe(false);
  });

  it("treats the same text typed in different Unicode forms as one password", async () => {
    const composed = "caf\u00e9 au lait";
    const decomposed = "cafe\u0301 au lait";
    expect(composed).not.toBe(decomposed);
    expect(await verifyPassword(decomposed, await hashPassword(composed))).toBe(true);
  });
});
