import { DomainError } from "@thinmesh/platform";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { loginThrottles } from "../src/db/schema.js";
import { createAccessTokenIssuer } from "../src/domain/access-tokens.js";
import { accountMessages, createAccounts } from "../src/domain/accounts.js";
import {
  createLoginThrottle,
  decideAttempt,
  defaultLoginThrottlePolicy,
  LoginThrottled,
  type LoginThrottlePolicy,
  lockSeconds,
  throttleKey,
} from "../src/domain/login-throttle.js";
import type { LoginThrottleState } from "../src/domain/ports.js";
import { createRefreshTokens } from "../src/domain/refresh-tokens.js";
import { createSigningKeys } from "../src/domain/signing-keys.js";
import { manualClock, openTestStore, testKeyEncryption, uniqueEmail } from "./support.js";

const policy = defaultLoginThrottlePolicy;

describe("the throttling rule", () => {
  it("lets 5 failures through, then locks for 1 s doubling per failure up to 15 min", () => {
    expect([1, 2, 3, 4].map((n) => lockSeconds(n, policy))).toEqual([0, 0, 0, 0]);
    expect([5, 6, 7, 8, 14].map((n) => lockSeconds(n, policy))).toEqual([1, 2, 4, 8, 512]);
    expect([15, 16, 200, 10_000].map((n) => lockSeconds(n, policy))).toEqual([900, 900, 900, 900]);
  });

  it("counts an attempt when it starts, refuses while locked without counting, forgets after an hour", () => {
    const start = new Date("2026-01-01T00:00:00Z");
    const at = (seconds: number) => new Date(start.getTime() + seconds * 1000);
    let state: LoginThrottleState | undefined;
    for (let n = 1; n <= 5; n++) {
      const decision = decideAttempt(state, at(0), policy);
      if (!decision.allowed) throw new Error(`attempt ${n} refused`);
      state = decision.state;
    }
    expect(state).toMatchObject({ failures: 5, lockedUntil: at(1) });
    expect(decideAttempt(state, at(0.5), policy)).toEqual({ allowed: false, retryAt: at(1) });
    const sixth = decideAttempt(state, at(1), policy);
    expect(sixth).toMatchObject({ allowed: true, state: { failures: 6, lockedUntil: at(3) } });
    if (!sixth.allowed) throw new Error("unreachable");
    // Kept at least as long as the lock, and an hour after the last attempt.
    expect(sixth.state.expiresAt).toEqual(at(1 + 3600));
    expect(decideAttempt(sixth.state, at(1 + 3601), policy)).toMatchObject({
      allowed: true,
      state: { failures: 1, lockedUntil: null },
    });
  });

  it("keys accounts by the normalised email, without storing it", () => {
    expect(throttleKey(" Alice@Example.COM ")).toBe(throttleKey("alice@example.com"));
    // NFKC: a full-width letter is the same letter.
    expect(throttleKey("ａlice@example.com")).toBe(throttleKey("alice@example.com"));
    expect(throttleKey("alice@example.com")).not.toBe(throttleKey("alicia@example.com"));
    expect(throttleKey("alice@example.com")).toMatch(/^[\da-f]{64}$/);
  });
});

describe("login throttling in the accounts", () => {
  let testStore: Awaited<ReturnType<typeof openTestStore>>;
  beforeAll(async () => {
    testStore = await openTestStore("auth_login_throttle");
  });
  afterAll(async () => {
    await testStore?.close();
  });
  beforeEach(async () => {
    await testStore.db.delete(loginThrottles);
  });

  async function domain(throttlePolicy: LoginThrottlePolicy = policy) {
    const { store } = testStore;
    const clock = manualClock();
    const keys = createSigningKeys({
      store,
      now: clock.now,
      accessTokenTtlSeconds: 900,
      cacheSeconds: 30,
      keyEncryption: testKeyEncryption,
    });
    await keys.ensureSigningKey();
    const throttle = createLoginThrottle({ store, now: clock.now, policy: throttlePolicy });
    const accounts = createAccounts({
      store,
      now: clock.now,
      throttle,
      // Cheap hashes: these tests are about counting, not hashing.
      scryptParams: { N: 2 ** 10, r: 8, p: 1 },
      accessTokens: createAccessTokenIssuer({
        keys,
        now: clock.now,
        issuer: "https://issuer.test",
        audience: "test",
        ttlSeconds: 900,
      }),
      refreshTokens: createRefreshTokens({
        store,
        now: clock.now,
        ttlSeconds: 3600,
        retryGraceSeconds: 30,
        successorSecret: async () => Buffer.alloc(32, 7),
      }),
    });
    return { clock, accounts, throttle };
  }

  /** What one login answers: "ok", "unauthenticated" or "throttled <seconds>". */
  const outcome = (promise: Promise<unknown>) =>
    promise.then(
      () => "ok",
      (error: unknown) => {
        if (error instanceof LoginThrottled) return `throttled ${error.retryAfterSeconds}`;
        if (error instanceof DomainError && error.message === accountMessages.badCredentials) {
          return error.kind;
        }
        throw error;
      },
    );

  it("refuses even the right password while locked, and lets it in after the lock", async () => {
    const { clock, accounts } = await domain();
    const email = uniqueEmail("locked");
    await accounts.register(email, "the right password");
    const wrong = [];
    for (let n = 0; n < 5; n++) wrong.push(await outcome(accounts.login(email, "guess")));
    expect(wrong).toEqual(Array(5).fill("unauthenticated"));
    expect(await outcome(accounts.login(email, "the right password"))).toBe("throttled 1");
    clock.advance(1_000);
    expect(await outcome(accounts.login(email, "the right password"))).toBe("ok");
  });

  it("grows the lock with each failure, and a success resets the count", async () => {
    const { clock, accounts } = await domain();
    const email = uniqueEmail("growing");
    await accounts.register(email, "the right password");
    const seen = [];
    for (let n = 0; n < 8; n++) {
      seen.push(await outcome(accounts.login(email, "guess")));
      seen.push(await outcome(accounts.login(email, "guess")));
      clock.advance(60_000); // longer than any of these locks
    }
    expect(seen).toEqual([
      ...Array(4).fill("unauthenticated"),
      "unauthenticated",
      "throttled 1",
      "unauthenticated",
      "throttled 2",
      "unauthenticated",
      "throttled 4",
      "unauthenticated",
      "throttled 8",
      "unauthenticated",
      "throttled 16",
      "unauthenticated",
      "throttled 32",
    ]);
    expect(await outcome(accounts.login(email, "the right password"))).toBe("ok");
    // Counting starts over: five failures go through again.
    for (let n = 0; n < 5; n++) {
      expect(await outcome(accounts.login(email, "guess"))).toBe("unauthenticated");
    }
    expect(await outcome(accounts.login(email, "guess"))).toBe("throttled 1");
  });

  it("throttles an unknown email exactly like an account, whatever the case of its letters", async () => {
    const { clock, accounts } = await domain();
    const known = uniqueEmail("known");
    await accounts.register(known, "the right password");
    const unknown = uniqueEmail("nobody");
    const run = async (email: string) => {
      const seen = [];
      for (let n = 0; n < 7; n++) {
        const spelled = n % 2 ? email.toUpperCase() : email;
        seen.push(await outcome(accounts.login(spelled, "guess")));
        if (n === 5) clock.advance(1_000);
      }
      return seen;
    };
    const forKnown = await run(known);
    expect(await run(unknown)).toEqual(forKnown);
    expect(forKnown).toEqual([
      ...Array(5).fill("unauthenticated"),
      "throttled 1",
      "unauthenticated",
    ]);
  });

  it("lets no more than the allowed guesses through when 20 arrive at once", async () => {
    const { accounts } = await domain();
    const email = uniqueEmail("burst");
    await accounts.register(email, "the right password");
    const outcomes = await Promise.all(
      Array.from({ length: 20 }, () => outcome(accounts.login(email, "guess"))),
    );
    expect(outcomes.filter((o) => o === "unauthenticated")).toHaveLength(5);
    expect(outcomes.filter((o) => o.startsWith("throttled"))).toHaveLength(15);
    const [row] = await testStore.db.select().from(loginThrottles);
    expect(row?.failures).toBe(5);
  });

  it("deletes state once it has expired", async () => {
    const { clock, accounts, throttle } = await domain();
    const email = uniqueEmail("prune");
    await outcome(accounts.login(email, "guess"));
    expect(await throttle.prune()).toBe(0);
    clock.advance(3601_000);
    expect(await throttle.prune()).toBe(1);
    expect(await testStore.db.select().from(loginThrottles)).toEqual([]);
  });
});
