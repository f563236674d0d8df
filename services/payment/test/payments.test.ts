// The charge's domain side with in-memory stores and scripted providers, no database and no
// transport: recording a PaymentRequested (the intent), one attempt at a charge, GetPayment.
import { randomUUID } from "node:crypto";
import { DomainError } from "@thinmesh/platform";
import { describe, expect, it } from "vitest";
import { backoffMs, chargeOnce } from "../src/domain/charging.js";
import { ledgerBalance } from "../src/domain/ledger.js";
import type {
  ChargeStore,
  NewPayment,
  Payment,
  PaymentRequest,
  PaymentStore,
} from "../src/domain/payment.js";
import { getPayment, recordPaymentRequest } from "../src/domain/payments.js";
import {
  type ChargeRequest,
  type ChargeResult,
  type PaymentProvider,
  TransientProviderError,
} from "../src/domain/provider.js";

/** Both stores over one map in memory; `lostRace` makes inserts behave as if another won. */
function memoryStores(options: { lostRace?: boolean } = {}) {
  const byOrder = new Map<string, Payment>();
  const retries: { id: string; delayMs: number; error: string }[] = [];
  const store: PaymentStore = {
    async findByOrderId(orderId) {
      return byOrder.get(orderId);
    },
    async insertIntent(charge) {
      if (options.lostRace || byOrder.has(charge.orderId)) return false;
      byOrder.set(charge.orderId, {
        id: charge.id,
        orderId: charge.orderId,
        userId: charge.userId,
        status: "PENDING",
        amount: charge.amount,
        providerReference: undefined,
        declineReason: undefined,
        ledger: [],
        createdAt: new Date(),
      });
      return true;
    },
  };
  const charges: ChargeStore = {
    claimDue: async () => [],
    renewLeases: async () => {},
    releaseLeases: async () => {},
    async retryLater(id, delayMs, error) {
      retries.push({ id, delayMs, error });
    },
    async settle(payment: NewPayment) {
      const current = byOrder.get(payment.orderId);
      if (current?.status !== "PENDING") return false;
      const createdAt = new Date();
      byOrder.set(payment.orderId, {
        ...payment,
        ledger: payment.ledger.map((entry) => ({ ...entry, createdAt })),
        createdAt,
      });
      return true;
    },
  };
  return { store, charges, byOrder, retries };
}

/** A provider that answers (or throws) as scripted, and records what it was asked. */
function scriptedProvider(answer: () => ChargeResult) {
  const calls: ChargeRequest[] = [];
  const provider: PaymentProvider = {
    async charge(request) {
      calls.push(request);
      return answer();
    },
  };
  return { provider, calls };
}

const captured = (): ChargeResult => ({ outcome: "captured", reference: "ref-1" });
const policy = { baseBackoffMs: 100, maxBackoffMs: 1_000 };
const recording = { leaseMs: 3_000, trace: { traceparent: "", tracestate: "" } };

function request(overrides: Partial<PaymentRequest> = {}): PaymentRequest {
  return {
    orderId: randomUUID(),
    userId: "user-1",
    amount: { currencyCode: "EUR", amountMinor: 2_500n },
    paymentToken: "tok_visa",
    ...overrides,
  };
}

async function domainError(promise: Promise<unknown>): Promise<DomainError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(DomainError);
  return error as DomainError;
}

/** Records the request's intent; resolves to the pending charge. */
async function recorded(stores: ReturnType<typeof memoryStores>, asked: PaymentRequest) {
  const outcome = await recordPaymentRequest(stores.store, asked, recording);
  if (outcome.kind !== "recorded") throw new Error(`not recorded: ${outcome.kind}`);
  return outcome.charge;
}

describe("recording a PaymentRequested", () => {
  it("records a PENDING charge of the amount asked for, without calling any provider", async () => {
    const stores = memoryStores();
    const asked = request();
    const outcome = await recordPaymentRequest(stores.store, asked, recording);
    expect(outcome).toEqual({
      kind: "recorded",
      charge: expect.objectContaining({
        orderId: asked.orderId,
        amount: asked.amount,
        paymentToken: "tok_visa",
        attempts: 1,
      }),
    });
    expect(stores.byOrder.get(asked.orderId)?.status).toBe("PENDING");
  });

  it("changes nothing for the same request again (a new event for the same order)", async () => {
    const stores = memoryStores();
    const asked = request();
    await recordPaymentRequest(stores.store, asked, recording);
    expect(await recordPaymentRequest(stores.store, asked, recording)).toEqual({
      kind: "repeated",
      status: "PENDING",
    });
  });

  it.each([
    [
      "another amount",
      { amount: { currencyCode: "EUR", amountMinor: 1n } },
      /for EUR 25.00, but this one asks for EUR 0.01/,
    ],
    [
      "another currency",
      { amount: { currencyCode: "USD", amountMinor: 2_500n } },
      /asks for USD 25.00/,
    ],
    ["another customer", { userId: "someone-else" }, /from another customer/],
  ])("refuses a second request for the order with %s", async (_what, overrides, reason) => {
    const stores = memoryStores();
    const asked = request();
    await recordPaymentRequest(stores.store, asked, recording);
    const again = await recordPaymentRequest(stores.store, { ...asked, ...overrides }, recording);
    expect(again).toEqual({ kind: "refused", reason: expect.stringMatching(reason) });
    expect(stores.byOrder.get(asked.orderId)?.amount).toEqual(asked.amount);
  });

  it.each([
    ["an order id that is not a UUID", { orderId: "order-1" }, /order_id must be a UUID/],
    ["no user id", { userId: "" }, /user_id is required/],
    ["no payment token", { paymentToken: "" }, /payment_token is required/],
    ["no amount", { amount: undefined }, /amount is required/],
    [
      "a zero amount",
      { amount: { currencyCode: "EUR", amountMinor: 0n } },
      /amount_minor must be positive/,
    ],
    [
      "a bad currency",
      { amount: { currencyCode: "eur", amountMinor: 1n } },
      /currency_code must be an ISO 4217 code/,
    ],
  ])("refuses %s as invalid_argument, recording nothing", async (_what, overrides, message) => {
    const stores = memoryStores();
    const error = await domainError(
      recordPaymentRequest(stores.store, request(overrides), recording),
    );
    expect(error.kind).toBe("invalid_argument");
    expect(error.message).toMatch(message);
    expect(stores.byOrder.size).toBe(0);
  });
});

describe("one attempt at a charge", () => {
  it("charges with the order id as idempotency key and settles a capture with its ledger", async () => {
    const stores = memoryStores();
    const { provider, calls } = scriptedProvider(captured);
    const asked = request();
    const charge = await recorded(stores, asked);
    const outcome = await chargeOnce(provider, stores.charges, charge, policy);
    expect(calls).toEqual([
      {
        orderId: asked.orderId,
        amount: asked.amount,
        paymentToken: "tok_visa",
        idempotencyKey: asked.orderId,
      },
    ]);
    expect(outcome).toMatchObject({
      kind: "settled",
      payment: { id: charge.id, status: "CAPTURED", providerReference: "ref-1" },
    });
    const payment = stores.byOrder.get(asked.orderId)!;
    expect(payment.ledger).toHaveLength(2);
    expect(ledgerBalance(payment.ledger)).toBe(0n);
  });

  it("settles a decline with the provider's reason and no ledger entries", async () => {
    const stores = memoryStores();
    const { provider } = scriptedProvider(() => ({ outcome: "declined", reason: "card declined" }));
    const outcome = await chargeOnce(
      provider,
      stores.charges,
      await recorded(stores, request()),
      policy,
    );
    expect(outcome).toMatchObject({
      kind: "settled",
      payment: { status: "DECLINED", declineReason: "card declined", ledger: [] },
    });
  });

  it("leaves the charge pending and due again after a backoff when the provider fails transiently", async () => {
    const stores = memoryStores();
    const { provider } = scriptedProvider(() => {
      throw new TransientProviderError("provider timed out");
    });
    const asked = request();
    const charge = await recorded(stores, asked);
    const outcome = await chargeOnce(provider, stores.charges, charge, policy);
    expect(outcome).toMatchObject({ kind: "retry", transient: true });
    expect(stores.retries).toEqual([
      { id: charge.id, delayMs: expect.any(Number), error: "provider timed out" },
    ]);
    expect(stores.byOrder.get(asked.orderId)?.status).toBe("PENDING");
  });

  it("retries any other provider error too (only the provider declines), flagged as unexpected", async () => {
    const stores = memoryStores();
    const { provider } = scriptedProvider(() => {
      throw new TypeError("adapter bug");
    });
    const outcome = await chargeOnce(
      provider,
      stores.charges,
      await recorded(stores, request()),
      policy,
    );
    expect(outcome).toMatchObject({ kind: "retry", transient: false });
    expect(stores.retries).toHaveLength(1);
  });

  it("records nothing when another process settled the charge meanwhile", async () => {
    const stores = memoryStores();
    const charge = await recorded(stores, request());
    const { provider } = scriptedProvider(captured);
    await chargeOnce(provider, stores.charges, charge, policy);
    // The same charge taken over (its lease ran out) and charged again with the same key.
    const again = await chargeOnce(provider, stores.charges, { ...charge, attempts: 2 }, policy);
    expect(again.kind).toBe("settled elsewhere");
  });

  it("backs off exponentially with jitter, up to the maximum", () => {
    const delays = (attempts: number) =>
      Array.from({ length: 50 }, () => backoffMs(attempts, policy));
    for (const [attempts, base] of [
      [1, 100],
      [2, 200],
      [3, 400],
      [10, 1_000],
    ] as const) {
      for (const delay of delays(attempts)) {
        expect(delay).toBeGreaterThanOrEqual(base / 2);
        expect(delay).toBeLessThanOrEqual(base);
      }
    }
  });
});

describe("a forged PaymentRequested for less than the order's total", () => {
  it("is charged only what it asked for, and its capture says so (which the order refuses)", async () => {
    const stores = memoryStores();
    const forged = request({ amount: { currencyCode: "EUR", amountMinor: 1n } });
    const { provider, calls } = scriptedProvider(captured);
    const outcome = await chargeOnce(
      provider,
      stores.charges,
      await recorded(stores, forged),
      policy,
    );
    expect(calls.map((c) => c.amount)).toEqual([{ currencyCode: "EUR", amountMinor: 1n }]);
    expect(outcome).toMatchObject({ payment: { amount: { amountMinor: 1n } } });
    // The genuine request that follows is not charged a second time, nor for a new amount.
    const genuine = { ...forged, amount: { currencyCode: "EUR", amountMinor: 3_800n } };
    expect(await recordPaymentRequest(stores.store, genuine, recording)).toMatchObject({
      kind: "refused",
    });
    expect(calls).toHaveLength(1);
  });
});

describe("getting a payment", () => {
  it("finds a settled one by order id; a pending one is failed_precondition; else not_found", async () => {
    const stores = memoryStores();
    const asked = request();
    const charge = await recorded(stores, asked);
    const pending = await domainError(getPayment(stores.store, asked.orderId));
    expect(pending.kind).toBe("failed_precondition");
    await chargeOnce(scriptedProvider(captured).provider, stores.charges, charge, policy);
    expect((await getPayment(stores.store, asked.orderId)).orderId).toBe(asked.orderId);
    const unknown = randomUUID();
    const error = await domainError(getPayment(stores.store, unknown));
    expect(error.kind).toBe("not_found");
    expect(error.message).toContain(unknown);
    expect((await domainError(getPayment(stores.store, "nope"))).kind).toBe("invalid_argument");
  });
});
