import { createHash } from "node:crypto";
import type { AuthStore, Clock, LoginThrottleState } from "./ports.js";

/**
 * The rule, per account (normalised email), the same for emails without an account:
 *
 * - every sign-in attempt counts as a failure from the moment it starts; a successful one
 *   then clears the count. Counting up front is what keeps 20 guesses in flight at once from
 *   all being checked against a count that none of them has raised yet;
 * - `freeFailures` attempts in a row go through at once; the `freeFailures`-th failure and
 *   every further one lock the account for `firstLockSeconds`, doubling per failure up to
 *   `maxLockSeconds` (defaults 5, 1 s, 15 min: after the 5th failure 1 s, then 2, 4 … 512 s,
 *   then 900 s each);
 * - while locked, every attempt is refused before the password is looked at, even the right
 *   password (otherwise the lock would not stop guessing), and a refused attempt does not
 *   count (no guess was made);
 * - failures are forgotten `memorySeconds` (default 1 h) after the last attempt.
 *
 * At the cap that leaves an attacker about four guesses per account per hour. Per-client
 * limits (one client trying many accounts) are the mesh's job: the edge rate limit.
 */
export interface LoginThrottlePolicy {
  freeFailures: number;
  firstLockSeconds: number;
  maxLockSeconds: number;
  memorySeconds: number;
}

export const defaultLoginThrottlePolicy: LoginThrottlePolicy = {
  freeFailures: 5,
  firstLockSeconds: 1,
  maxLockSeconds: 15 * 60,
  memorySeconds: 3600,
};

/** Refused because the account is locked; try again after retryAfterSeconds. */
export class LoginThrottled extends Error {
  constructor(
    readonly retryAfterSeconds: number,
    readonly retryAt: Date,
  ) {
    super(
      `too many failed sign-ins for this account; try again in ${retryAfterSeconds} s (${retryAt.toISOString()})`,
    );
    this.name = "LoginThrottled";
  }
}

/** The same key for the same address however it was typed; no email is stored. */
export function throttleKey(email: string): string {
  const normalised = email.normalize("NFKC").trim().toLowerCase();
  return createHash("sha256").update(normalised).digest("hex");
}

/** Seconds the account is locked after its n-th failure; 0 below the threshold. */
export function lockSeconds(failures: number, policy: LoginThrottlePolicy): number {
  if (failures < policy.freeFailures) return 0;
  const doublings = failures - policy.freeFailures;
  // 2 ** doublings overflows to Infinity long after the cap; min() handles that too.
  return Math.min(policy.firstLockSeconds * 2 ** doublings, policy.maxLockSeconds);
}

export type AttemptDecision =
  | { allowed: true; state: LoginThrottleState }
  | { allowed: false; retryAt: Date };

/** What one more attempt at `at` does to the account's state (pure; the store applies it). */
export function decideAttempt(
  state: LoginThrottleState | undefined,
  at: Date,
  policy: LoginThrottlePolicy,
): AttemptDecision {
  if (state?.lockedUntil && state.lockedUntil > at) {
    return { allowed: false, retryAt: state.lockedUntil };
  }
  const forgotten =
    !state || at.getTime() - state.lastAttemptAt.getTime() > policy.memorySeconds * 1000;
  const failures = (forgotten ? 0 : state.failures) + 1;
  const lock = lockSeconds(failures, policy);
  const lockedUntil = lock > 0 ? new Date(at.getTime() + lock * 1000) : null;
  const remembered = new Date(at.getTime() + policy.memorySeconds * 1000);
  return {
    allowed: true,
    state: {
      failures,
      lockedUntil,
      lastAttemptAt: at,
      expiresAt: lockedUntil && lockedUntil > remembered ? lockedUntil : remembered,
    },
  };
}

export interface LoginThrottleOptions {
  store: AuthStore;
  now: Clock;
  policy: LoginThrottlePolicy;
}

export type LoginThrottle = ReturnType<typeof createLoginThrottle>;

export function createLoginThrottle({ store, now, policy }: LoginThrottleOptions) {
  return {
    /**
     * Counts an attempt for the email before its password is checked; rejects with
     * LoginThrottled while the account is locked. Returns the key to clear on success.
     */
    async begin(email: string): Promise<string> {
      const key = throttleKey(email);
      const at = now();
      const decision = await store.updateLoginThrottle(key, at, (state) => {
        const decided = decideAttempt(state, at, policy);
        return { state: decided.allowed ? decided.state : undefined, result: decided };
      });
      if (!decision.allowed) {
        const seconds = Math.max(1, Math.ceil((decision.retryAt.getTime() - at.getTime()) / 1000));
        throw new LoginThrottled(seconds, decision.retryAt);
      }
      return key;
    },

    /** A successful sign-in clears the account's failures. */
    succeeded(key: string): Promise<void> {
      return store.clearLoginThrottle(key);
    },

    /** Deletes state that no longer means anything; returns how many rows. */
    prune(): Promise<number> {
      return store.deleteLoginThrottlesExpiredBefore(now());
    },
  };
}
