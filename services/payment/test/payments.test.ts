// The charge decision (handlePaymentRequest) and GetPayment's domain side, with an in-memory
// store and scripted providers: no database, no transport.
import { randomUUID } from "node:crypto";
import { DomainError } from "@thinmesh/platform";
import { describe, expect, it } from "vitest";
import { ledgerBalance } from "../src/domain/ledger.js";
import type { NewPayment, Payment, PaymentRequest, PaymentStore } from "../src/domain/payment.js";
import { getPayment, handlePaymentRequest } from "../src/domain/payments.js";
import {
  type ChargeRequest,
  type ChargeResult,
  type PaymentProvider,
  TransientProviderError,
} from "../src/domain/provider.js";

/** A store in memory; `lostRace` makes inserts behave as if another delivery won. */
function memoryStore(options: { lostRace?: boolean } = {}) {
  const byOrder = new Map<string, Payment>();
  const store: PaymentStore = {
    async findByOrderId(orderId) {
      return byOrder.get(orderId);
    },
    async insertIfFirstForOrder(payment: NewPayment) {
      if (options.lostRace || byOrder.has(payment.orderId)) return false;
      const createdAt = new Date();
      byOrder.set(payment.orderId, {
        ...payment,
        ledger: payment.ledger.map((entry) => ({ ...entry, createdAt })),
        createdAt,
      });
      return true;
    },
  };
  return { store, byOrder };
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

describe("handling a PaymentRequested", () => {
  it("charges with the order id as idempotency key and records a capture with its ledger", async () => {
    const { store, byOrder } = memoryStore();
    const { provider, calls } = scriptedProvider(captured);
    const asked = request();
    const outcome = await handlePaymentRequest(store, provider, asked);
    expect(calls).toEqual([
      {
        orderId: asked.orderId,
        amount: asked.amount,
        paymentToken: "tok_visa",
        idempotencyKey: asked.orderId,
      },
    ]);
    expect(outcome).toMatchObject({
      recorded: true,
      payment: {
        orderId: asked.orderId,
        status: "CAPTURED",
        providerReference: "ref-1",
        declineReason: undefined,
      },
    });
    const payment = byOrder.get(asked.orderId)!;
    expect(payment.ledger).toHaveLength(2);
    expect(ledgerBalance(payment.ledger)).toBe(0n);
  });

  it("records a decline with the provider's reason and no ledger entries", async () => {
    const { store } = memoryStore();
    const { provider } = scriptedProvider(() => ({ outcome: "declined", reason: "card declined" }));
    const outcome = await handlePaymentRequest(store, provider, request());
    expect(outcome).toMatchObject({
      recorded: true,
      payment: { status: "DECLINED", declineReason: "card declined", ledger: [] },
    });
  });

  it("does not charge an order that already has a payment", async () => {
    const { store } = memoryStore();
    const { provider, calls } = scriptedProvider(captured);
    const asked = request();
    await handlePaymentRequest(store, provider, asked);
    const again = await handlePaymentRequest(store, provider, { ...asked, userId: "someone-else" });
    expect(again).toEqual({ recorded: false });
    expect(calls).toHaveLength(1);
  });

  it("records nothing when a racing delivery inserted the order's payment first", async () => {
    const { store, byOrder } = memoryStore({ lostRace: true });
    const { provider } = scriptedProvider(captured);
    expect(await handlePaymentRequest(store, provider, request())).toEqual({ recorded: false });
    expect(byOrder.size).toBe(0);
  });

  it("turns a transient provider failure into unavailable and records nothing", async () => {
    const { store, byOrder } = memoryStore();
    const { provider } = scriptedProvider(() => {
      throw new TransientProviderError("provider timed out");
    });
    const asked = request();
    const error = await domainError(handlePaymentRequest(store, provider, asked));
    expect(error.kind).toBe("unavailable");
    expect(error.message).toContain(asked.orderId);
    expect(error.message).toContain("provider timed out");
    expect(byOrder.size).toBe(0);
  });

  it("lets any other provider error through as it is (a bug, not a retry)", async () => {
    const { store } = memoryStore();
    const { provider } = scriptedProvider(() => {
      throw new TypeError("adapter bug");
    });
    await expect(handlePaymentRequest(store, provider, request())).rejects.toThrow(TypeError);
  });

  it.each([
    ["an order id that is not a UUID", { orderId: "order-1" }, /order_id must be a UUID/],
    ["no user id", { userId: "" }, /user_id is required/],
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
  ])("refuses %s as invalid_argument without charging", async (_what, overrides, message) => {
    const { store } = memoryStore();
    const { provider, calls } = scriptedProvider(captured);
    const error = await domainError(handlePaymentRequest(store, provider, request(overrides)));
    expect(error.kind).toBe("invalid_argument");
    expect(error.message).toMatch(message);
    expect(calls).toHaveLength(0);
  });
});

describe("getting a payment", () => {
  it("finds it by order id, and is not_found naming the order otherwise", async () => {
    const { store } = memoryStore();
    const asked = request();
    await handlePaymentRequest(store, scriptedProvider(captured).provider, asked);
    expect((await getPayment(store, asked.orderId)).orderId).toBe(asked.orderId);
    const unknown = randomUUID();
    const error = await domainError(getPayment(store, unknown));
    expect(error.kind).toBe("not_found");
    expect(error.message).toContain(unknown);
    expect((await domainError(getPayment(store, "nope"))).kind).toBe("invalid_argument");
  });
});
