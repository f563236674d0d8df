import { randomBytes } from "node:crypto";
import { domainError as rejection } from "@thinmesh/platform/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createRefreshTokens,
  hashRefreshToken,
  refreshTokenMessages,
  successorOf,
} from "../src/domain/refresh-tokens.js";
import { manualClock, openTestStore } from "./support.js";

let testStore: Awaited<ReturnType<typeof openTestStore>>;
const secret = randomBytes(32);
const day = 24 * 3600 * 1000;

beforeAll(async () => {
  testStore = await openTestStore("auth_refresh");
});
afterAll(async () => {
  await testStore?.close();
});

function setup(options: { ttlSeconds?: number; retryGraceSeconds?: number } = {}) {
  const clock = manualClock();
  const tokens = createRefreshTokens({
    store: testStore.store,
    now: clock.now,
    ttlSeconds: options.ttlSeconds ?? 30 * 24 * 3600,
    retryGraceSeconds: options.retryGraceSeconds ?? 30,
    successorSecret: async () => secret,
  });
  return { clock, tokens };
}

describe("refresh tokens", () => {
  it("stores only a hash and rotates into a new token of the same family", async () => {
    const { tokens } = setup();
    const user = await testStore.newUser();
    const first = await tokens.start(user.id);
    expect(first.token).toMatch(/^[\w-]{43}$/);
    const stored = await testStore.store.findRefreshToken(hashRefreshToken(first.token));
    expect(stored).toMatchObject({ userId: user.id, rotatedAt: null, familyRevokedAt: null });
    expect(stored?.tokenHash).not.toContain(first.token);

    const second = await tokens.rotate(first.token);
    expect(second.userId).toBe(user.id);
    expect(second.token).not.toBe(first.token);
    expect(second.token).toBe(successorOf(secret, first.token));
    const spent = await testStore.store.findRefreshToken(hashRefreshToken(first.token));
    const next = await testStore.store.findRefreshToken(hashRefreshToken(second.token));
    expect(spent?.rotatedAt).toBeInstanceOf(Date);
    expect(next).toMatchObject({ familyId: stored!.familyId, rotatedAt: null });
    await expect(tokens.rotate(second.token)).resolves.toMatchObject({ userId: user.id });
  });

  it("revokes the whole family when a spent token comes back after the grace window", async () => {
    const { clock, tokens } = setup();
    const user = await testStore.newUser();
    const first = await tokens.start(user.id);
    const second = await tokens.rotate(first.token);
    clock.advance(31_000);

    const reuse = await rejection(tokens.rotate(first.token));
    expect(reuse).toMatchObject({ kind: "unauthenticated", message: refreshTokenMessages.reused });
    // The legitimate holder's newer token dies with the family.
    const after = await rejection(tokens.rotate(second.token));
    expect(after).toMatchObject({ kind: "unauthenticated", message: refreshTokenMessages.revoked });
  });

  it("answers a retry within the grace window with the same successor", async () => {
    const { clock, tokens } = setup();
    const user = await testStore.newUser();
    const first = await tokens.start(user.id);
    const second = await tokens.rotate(first.token);
    clock.advance(29_000);
    const retried = await tokens.rotate(first.token);
    expect(retried).toEqual(second);
    // Nothing was revoked: the successor still rotates.
    await expect(tokens.rotate(second.token)).resolves.toMatchObject({ userId: user.id });
  });

  it("treats a spent token as stolen, even within the window, once its successor was used", async () => {
    const { clock, tokens } = setup();
    const user = await testStore.newUser();
    const first = await tokens.start(user.id);
    const second = await tokens.rotate(first.token);
    const third = await tokens.rotate(second.token);
    clock.advance(1_000);
    const reuse = await rejection(tokens.rotate(first.token));
    expect(reuse.message).toBe(refreshTokenMessages.reused);
    expect((await rejection(tokens.rotate(third.token))).message).toBe(
      refreshTokenMessages.revoked,
    );
  });

  it("gives concurrent presentations of one token the same successor", async () => {
    const { tokens } = setup();
    const user = await testStore.newUser();
    const first = await tokens.start(user.id);
    const results = await Promise.all([1, 2, 3, 4].map(() => tokens.rotate(first.token)));
    expect(new Set(results.map((r) => r.token)).size).toBe(1);
    await expect(tokens.rotate(results[0]!.token)).resolves.toMatchObject({ userId: user.id });
  });

  it("rejects expired and unknown tokens", async () => {
    const { clock, tokens } = setup({ ttlSeconds: 7 * 24 * 3600 });
    const user = await testStore.newUser();
    const first = await tokens.start(user.id);
    expect(first.expiresAt.getTime() - clock.now().getTime()).toBe(7 * day);
    clock.advance(7 * day - 1_000);
    const second = await tokens.rotate(first.token); // still valid a second before expiry
    expect(second.expiresAt.getTime() - clock.now().getTime()).toBe(7 * day);
    clock.advance(7 * day);
    const expired = await rejection(tokens.rotate(second.token));
    expect(expired).toMatchObject({
      kind: "unauthenticated",
      message: refreshTokenMessages.expired,
    });

    const unknown = await rejection(tokens.rotate(randomBytes(32).toString("base64url")));
    expect(unknown).toMatchObject({
      kind: "unauthenticated",
      message: refreshTokenMessages.unknown,
    });
  });
});
