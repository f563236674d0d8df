// The order saga's state machine and its steps, without a database: every transition is
// allowed from exactly one status and refused from every other.
import { randomUUID } from "node:crypto";
import { describe, expect, it } from "vitest";
import { sameMoney } from "../src/domain/money.js";
import { type OrderHead, type OrderStatus, orderStatuses } from "../src/domain/order.js";
import {
  applySagaEvent,
  type FollowUp,
  type SagaEvent,
  type SagaEventKind,
  type SagaStore,
  sagaTransitions,
  transitionFor,
} from "../src/domain/saga.js";

const expected: Record<SagaEventKind, [OrderStatus, OrderStatus]> = {
  stock_reserved: ["PENDING", "AWAITING_PAYMENT"],
  stock_rejected: ["PENDING", "CANCELLED"],
  payment_captured: ["AWAITING_PAYMENT", "CONFIRMED"],
  payment_declined: ["AWAITING_PAYMENT", "CANCELLED"],
};
const kinds = Object.keys(expected) as SagaEventKind[];
const pairs = kinds.flatMap((kind) => orderStatuses.map((status) => [kind, status] as const));

describe("transitionFor", () => {
  it.each(pairs)("%s on a %s order", (kind, status) => {
    const [from, to] = expected[kind];
    const check = transitionFor(status, kind);
    if (status === from) {
      expect(check).toEqual({ allowed: true, transition: expect.objectContaining({ from, to }) });
    } else {
      expect(check.allowed).toBe(false);
      expect(!check.allowed && check.reason).toContain(status);
    }
  });

  it("leaves CONFIRMED and CANCELLED final", () => {
    for (const status of ["CONFIRMED", "CANCELLED"] as const) {
      expect(kinds.filter((kind) => transitionFor(status, kind).allowed)).toEqual([]);
    }
  });

  it("names every step for the timeline", () => {
    expect(Object.values(sagaTransitions).map((t) => t.step)).toEqual([
      "stock reserved",
      "stock rejected",
      "payment captured",
      "payment declined",
    ]);
  });
});

/** An in-memory SagaStore over one order, recording what the step did. */
function memoryStore(status: OrderStatus | undefined) {
  const order: OrderHead | undefined = status && {
    id: randomUUID(),
    userId: "user-1",
    status,
    total: { currencyCode: "EUR", amountMinor: 2580n },
    cancelReason: "",
    traceId: "t-placed",
    paymentToken: "tok_test_visa",
    createdAt: new Date(),
    updatedAt: new Date(),
  };
  const timeline: unknown[] = [];
  const published: FollowUp[] = [];
  const store: SagaStore = {
    async head(id) {
      return order && id === order.id ? { ...order } : undefined;
    },
    async advance(id, transition, cancelReason, total) {
      if (!order || id !== order.id || order.status !== transition.from) return undefined;
      if (total && !sameMoney(total, order.total)) return undefined;
      order.status = transition.to;
      if (cancelReason !== undefined) order.cancelReason = cancelReason;
      return { ...order };
    },
    async appendTimeline(id, entry) {
      if (id === order?.id) timeline.push(entry);
    },
    async publish(followUp) {
      published.push(followUp);
    },
  };
  return { store, order, timeline, published, orderId: order?.id ?? randomUUID() };
}

describe("applySagaEvent", () => {
  it("reserves, requests the payment of the total with the order's token", async () => {
    const m = memoryStore("PENDING");
    const outcome = await applySagaEvent(
      m.store,
      { kind: "stock_reserved", orderId: m.orderId },
      "trace-1",
    );
    expect(outcome).toMatchObject({ applied: true, from: "PENDING", to: "AWAITING_PAYMENT" });
    expect(m.order?.status).toBe("AWAITING_PAYMENT");
    expect(m.timeline).toEqual([
      expect.objectContaining({
        step: "stock reserved",
        status: "AWAITING_PAYMENT",
        traceId: "trace-1",
      }),
    ]);
    expect(m.published).toEqual([
      {
        kind: "payment_requested",
        orderId: m.orderId,
        userId: "user-1",
        amount: { currencyCode: "EUR", amountMinor: 2580n },
        paymentToken: "tok_test_visa",
      },
    ]);
  });

  it("cancels on rejected stock with the reason and publishes nothing", async () => {
    const m = memoryStore("PENDING");
    const event: SagaEvent = {
      kind: "stock_rejected",
      orderId: m.orderId,
      reason: "only 1 of MUG-BLUE left",
      productIds: ["p1"],
    };
    expect(await applySagaEvent(m.store, event, "t")).toMatchObject({
      applied: true,
      to: "CANCELLED",
    });
    expect(m.order?.cancelReason).toContain("only 1 of MUG-BLUE left");
    expect(m.timeline).toEqual([
      expect.objectContaining({ detail: expect.stringContaining("p1") }),
    ]);
    expect(m.published).toEqual([]);
  });

  it("confirms a captured payment and publishes OrderConfirmed", async () => {
    const m = memoryStore("AWAITING_PAYMENT");
    const event: SagaEvent = {
      kind: "payment_captured",
      orderId: m.orderId,
      paymentId: "pay-1",
      amount: { currencyCode: "EUR", amountMinor: 2580n },
    };
    expect(await applySagaEvent(m.store, event, "t")).toMatchObject({
      applied: true,
      to: "CONFIRMED",
    });
    expect(m.published).toEqual([{ kind: "order_confirmed", orderId: m.orderId }]);
    expect(m.timeline).toEqual([
      expect.objectContaining({ detail: "payment pay-1 captured EUR 25.80" }),
    ]);
  });

  it.each([
    [
      "a smaller amount",
      { currencyCode: "EUR", amountMinor: 1n },
      /captured EUR 0.01, but the order total is EUR 25.80/,
    ],
    [
      "a larger amount",
      { currencyCode: "EUR", amountMinor: 2581n },
      /captured EUR 25.81, but the order total is EUR 25.80/,
    ],
    [
      "another currency",
      { currencyCode: "USD", amountMinor: 2580n },
      /captured USD 25.80, but the order total is EUR 25.80/,
    ],
    ["no amount", undefined, /must say how much was captured/],
  ])("refuses a capture of %s: the order stays AWAITING_PAYMENT", async (_what, amount, reason) => {
    const m = memoryStore("AWAITING_PAYMENT");
    const outcome = await applySagaEvent(
      m.store,
      { kind: "payment_captured", orderId: m.orderId, paymentId: "pay-1", amount },
      "t",
    );
    expect(outcome).toEqual({ applied: false, reason: expect.stringMatching(reason) });
    expect(m.order?.status).toBe("AWAITING_PAYMENT");
    expect(m.timeline).toEqual([]);
    expect(m.published).toEqual([]);
  });

  it("refuses a capture or decline that names no payment", async () => {
    for (const event of [
      { kind: "payment_captured", amount: { currencyCode: "EUR", amountMinor: 2580n } },
      { kind: "payment_declined", reason: "card declined" },
    ] as const) {
      const m = memoryStore("AWAITING_PAYMENT");
      const outcome = await applySagaEvent(
        m.store,
        { ...event, orderId: m.orderId, paymentId: "" } as SagaEvent,
        "t",
      );
      expect(outcome).toEqual({
        applied: false,
        reason: expect.stringMatching(/must name the payment/),
      });
      expect(m.order?.status).toBe("AWAITING_PAYMENT");
    }
  });

  it("cancels a declined payment and publishes OrderCancelled with the reason", async () => {
    const m = memoryStore("AWAITING_PAYMENT");
    const event: SagaEvent = {
      kind: "payment_declined",
      orderId: m.orderId,
      paymentId: "pay-2",
      reason: "card declined",
    };
    expect(await applySagaEvent(m.store, event, "t")).toMatchObject({
      applied: true,
      to: "CANCELLED",
    });
    expect(m.order?.cancelReason).toBe("payment declined: card declined");
    expect(m.published).toEqual([
      { kind: "order_cancelled", orderId: m.orderId, reason: "payment declined: card declined" },
    ]);
  });

  it("changes nothing for an unknown order", async () => {
    const m = memoryStore(undefined);
    const outcome = await applySagaEvent(
      m.store,
      { kind: "stock_reserved", orderId: m.orderId },
      "t",
    );
    expect(outcome).toEqual({ applied: false, reason: `there is no order ${m.orderId}` });
    expect(m.published).toEqual([]);
    expect(m.timeline).toEqual([]);
  });

  it.each(
    pairs.filter(([kind, status]) => expected[kind][0] !== status),
  )("changes nothing for %s on a %s order", async (kind, status) => {
    const m = memoryStore(status);
    const event = {
      kind,
      orderId: m.orderId,
      reason: "r",
      productIds: [],
      paymentId: "p",
      amount: { currencyCode: "EUR", amountMinor: 2580n },
    } as SagaEvent;
    const outcome = await applySagaEvent(m.store, event, "t");
    expect(outcome.applied).toBe(false);
    expect(m.order?.status).toBe(status);
    expect(m.timeline).toEqual([]);
    expect(m.published).toEqual([]);
  });

  it("changes nothing when another event moves the order first", async () => {
    const m = memoryStore("PENDING");
    const racing: SagaStore = {
      ...m.store,
      async advance(id, transition, cancelReason) {
        // Another event's transaction commits right before this one's guarded update runs.
        await m.store.advance(id, sagaTransitions.stock_rejected, "lost the race");
        return m.store.advance(id, transition, cancelReason);
      },
    };
    const outcome = await applySagaEvent(
      racing,
      { kind: "stock_reserved", orderId: m.orderId },
      "t",
    );
    expect(outcome).toEqual({
      applied: false,
      reason: expect.stringMatching(/applies to orders in PENDING, but this one is CANCELLED/),
    });
    expect(m.order?.status).toBe("CANCELLED");
    expect(m.timeline).toEqual([]);
    expect(m.published).toEqual([]);
  });
});
