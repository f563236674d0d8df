// The deterministic simulator, called directly: its decisions, its transient failures and its
// idempotency.
import { randomUUID } from "node:crypto";
import { describe, expect, it } from "vitest";
import { formatMoney } from "../src/domain/money.js";
import { type ChargeRequest, TransientProviderError } from "../src/domain/provider.js";
import {
  createSimulatedProvider,
  simulatedReference,
  testTokens,
} from "../src/domain/simulator.js";

const defaults = { declineAboveMinor: 50_000n, transientFailures: 0 };

function charge(overrides: Partial<ChargeRequest> = {}): ChargeRequest {
  const orderId = randomUUID();
  return {
    orderId,
    amount: { currencyCode: "EUR", amountMinor: 12_900n },
    paymentToken: "tok_visa",
    idempotencyKey: orderId,
    ...overrides,
  };
}

const eur = (amountMinor: bigint) => ({ currencyCode: "EUR", amountMinor });

/** Attempts until one does not fail transiently: how many failed, and the result. */
async function untilDecided(
  provider: ReturnType<typeof createSimulatedProvider>,
  request: ChargeRequest,
) {
  for (let failures = 0; failures < 10; failures++) {
    try {
      return { failures, result: await provider.charge(request) };
    } catch (error) {
      expect(error).toBeInstanceOf(TransientProviderError);
    }
  }
  throw new Error("the simulator never decided");
}

describe("the simulator", () => {
  it("captures an ordinary charge with a reference", async () => {
    const provider = createSimulatedProvider(defaults);
    const result = await provider.charge(charge());
    expect(result).toEqual({
      outcome: "captured",
      reference: expect.stringMatching(/^sim_[0-9a-f]{24}$/),
    });
  });

  it("captures up to the limit and declines above it, naming the limit", async () => {
    const provider = createSimulatedProvider(defaults);
    expect(await provider.charge(charge({ amount: eur(50_000n) }))).toMatchObject({
      outcome: "captured",
    });
    expect(await provider.charge(charge({ amount: eur(50_001n) }))).toEqual({
      outcome: "declined",
      reason: "amount exceeds the limit of EUR 500.00",
    });
  });

  it("names the limit in the currency's own decimals", async () => {
    const provider = createSimulatedProvider({ ...defaults, declineAboveMinor: 5_000n });
    const result = await provider.charge(
      charge({ amount: { currencyCode: "JPY", amountMinor: 9_000n } }),
    );
    expect(result).toEqual({ outcome: "declined", reason: "amount exceeds the limit of JPY 5000" });
    expect(formatMoney({ currencyCode: "EUR", amountMinor: 5n })).toBe("EUR 0.05");
    expect(formatMoney({ currencyCode: "USD", amountMinor: 123_456_789_012n })).toBe(
      "USD 1234567890.12",
    );
  });

  it("declines the documented test card, whatever the amount", async () => {
    const provider = createSimulatedProvider(defaults);
    const result = await provider.charge(
      charge({ paymentToken: testTokens.declined, amount: eur(100n) }),
    );
    expect(result).toEqual({ outcome: "declined", reason: "card declined" });
  });

  it("fails the flaky test card's first two attempts per order, then captures", async () => {
    const provider = createSimulatedProvider(defaults);
    const request = charge({ paymentToken: testTokens.flaky });
    await expect(provider.charge(request)).rejects.toThrow(TransientProviderError);
    await expect(provider.charge(request)).rejects.toThrow(/attempt 2 of 2/);
    expect(await provider.charge(request)).toMatchObject({ outcome: "captured" });
    // Per order: another order with the same card starts failing again.
    const other = charge({ paymentToken: testTokens.flaky });
    expect((await untilDecided(provider, other)).failures).toBe(2);
  });

  it("fails every order's first N attempts when configured to", async () => {
    const provider = createSimulatedProvider({ ...defaults, transientFailures: 3 });
    for (const request of [charge(), charge({ paymentToken: testTokens.declined })]) {
      const { failures, result } = await untilDecided(provider, request);
      expect(failures).toBe(3);
      expect(result.outcome).toBe(
        request.paymentToken === testTokens.declined ? "declined" : "captured",
      );
    }
    // The flaky card fails the most either rule asks for.
    const flaky = await untilDecided(provider, charge({ paymentToken: testTokens.flaky }));
    expect(flaky.failures).toBe(3);
    const fewer = createSimulatedProvider({ ...defaults, transientFailures: 1 });
    expect((await untilDecided(fewer, charge({ paymentToken: testTokens.flaky }))).failures).toBe(
      2,
    );
  });

  it("is idempotent per key: the same key gets the same reference, even in another process", async () => {
    const provider = createSimulatedProvider(defaults);
    const request = charge();
    const first = await provider.charge(request);
    expect(await provider.charge(request)).toEqual(first);
    // A restarted simulator (or another replica) derives the same reference from the key.
    expect(await createSimulatedProvider(defaults).charge(request)).toEqual(first);
    expect(first).toEqual({ outcome: "captured", reference: simulatedReference(request.orderId) });
    const other = await provider.charge(charge());
    expect(other).not.toEqual(first);
  });

  it("answers a repeated key with the first result, not a new decision", async () => {
    const provider = createSimulatedProvider(defaults);
    const request = charge();
    const first = await provider.charge(request);
    const changed = await provider.charge({ ...request, amount: eur(99_999n) });
    expect(changed).toEqual(first);
  });

  it("does not fail transiently again once a key is decided", async () => {
    const provider = createSimulatedProvider(defaults);
    const request = charge({ paymentToken: testTokens.flaky });
    const { result } = await untilDecided(provider, request);
    expect(await provider.charge(request)).toEqual(result);
  });
});
