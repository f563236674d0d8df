// PaymentRequested events delivered to payment's EventSinkService over a real port, as the
// order service's outbox relay does: what payment records (payments, ledger, inbox, outbox)
// and what reaches the order service.
import { randomUUID } from "node:crypto";
import { Code } from "@connectrpc/connect";
import { isUniqueViolation } from "@thinmesh/platform";
import { eventually, rpcError } from "@thinmesh/platform/testing";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { payments } from "../src/db/schema.js";
import type { ChargeRequest } from "../src/domain/provider.js";
import { testTokens } from "../src/domain/simulator.js";
import { simulatorFor } from "../src/service.js";
import {
  inInbox,
  paymentRequested,
  paymentRequestedEvent,
  recordedFor,
  startTestPayment,
  type TestPayment,
  unpack,
} from "./support.js";

let payment: TestPayment;
/** Every charge the service asked the (simulated) provider for. */
const charges: ChargeRequest[] = [];
/** Runs before each charge reaches the simulator, to line up racing deliveries. */
let beforeCharge: (() => Promise<void>) | undefined;

beforeAll(async () => {
  payment = await startTestPayment(
    "payment_charging",
    {},
    {
      provider: (config) => {
        const simulator = simulatorFor(config);
        return {
          async charge(request) {
            charges.push(request);
            await beforeCharge?.();
            return simulator.charge(request);
          },
        };
      },
    },
  );
});
afterEach(() => {
  beforeCharge = undefined;
});
afterAll(async () => {
  await payment?.stop();
});

/** Delivers a PaymentRequested; resolves to the event delivered and the sink's answer. */
async function deliver(requested: ReturnType<typeof paymentRequested>) {
  const event = paymentRequestedEvent(requested);
  const response = await payment.sink.deliverOne(event);
  return { event, response };
}

const chargesFor = (orderId: string) => charges.filter((c) => c.orderId === orderId);

describe("a PaymentRequested", () => {
  it("captures the charge: payment, balanced ledger, PaymentCaptured in the outbox", async () => {
    const requested = paymentRequested({ amount: { currencyCode: "EUR", amountMinor: 12_900n } });
    const { event, response } = await deliver(requested);
    expect(response.duplicate).toBe(false);
    const recorded = await recordedFor(payment.service, requested.orderId);
    expect(recorded.payments).toEqual([
      expect.objectContaining({
        orderId: requested.orderId,
        userId: requested.userId,
        status: "CAPTURED",
        amountMinor: 12_900n,
        currency: "EUR",
        providerReference: expect.stringMatching(/^sim_/),
        declineReason: null,
      }),
    ]);
    expect(recorded.ledger).toMatchObject([
      { account: `customer:${requested.userId}`, direction: "debit", amountMinor: 12_900n },
      { account: "merchant", direction: "credit", amountMinor: 12_900n },
    ]);
    expect(recorded.events).toHaveLength(1);
    const [published] = recorded.events;
    expect(published).toMatchObject({
      type: "shop.events.v1.PaymentCaptured",
      subject: requested.orderId,
      captured: {
        orderId: requested.orderId,
        paymentId: recorded.payments[0]!.id,
        amount: { currencyCode: "EUR", amountMinor: 12_900n },
      },
    });
    expect(published?.envelope.source).toBe("payment");
    expect(await inInbox(payment.service, event.id)).toBe(true);
    expect(chargesFor(requested.orderId)).toEqual([
      expect.objectContaining({ idempotencyKey: requested.orderId }),
    ]);
  });

  it("reaches the order service through payment's outbox relay", async () => {
    const requested = paymentRequested();
    await deliver(requested);
    const received = await eventually(async () => {
      const event = payment.order.received.find((e) => e.subject === requested.orderId);
      expect(event).toBeDefined();
      return event!;
    });
    expect(unpack(received)).toMatchObject({
      type: "shop.events.v1.PaymentCaptured",
      captured: { orderId: requested.orderId },
    });
  });

  it("is declined above the limit: a DECLINED payment with the reason, no ledger, PaymentDeclined", async () => {
    const requested = paymentRequested({ amount: { currencyCode: "EUR", amountMinor: 50_001n } });
    await deliver(requested);
    const recorded = await recordedFor(payment.service, requested.orderId);
    const reason = "amount exceeds the limit of EUR 500.00";
    expect(recorded.payments).toEqual([
      expect.objectContaining({
        status: "DECLINED",
        declineReason: reason,
        providerReference: null,
      }),
    ]);
    expect(recorded.ledger).toEqual([]);
    expect(recorded.events).toMatchObject([
      {
        type: "shop.events.v1.PaymentDeclined",
        subject: requested.orderId,
        declined: { orderId: requested.orderId, paymentId: recorded.payments[0]!.id, reason },
      },
    ]);
  });

  it("is declined for the declined test card", async () => {
    const requested = paymentRequested({ paymentToken: testTokens.declined });
    await deliver(requested);
    const recorded = await recordedFor(payment.service, requested.orderId);
    expect(recorded.payments).toMatchObject([
      { status: "DECLINED", declineReason: "card declined" },
    ]);
    expect(recorded.events).toMatchObject([{ declined: { reason: "card declined" } }]);
  });

  it("fails with unavailable while the provider fails transiently, writing nothing, and succeeds later", async () => {
    const requested = paymentRequested({ paymentToken: testTokens.flaky });
    const first = paymentRequestedEvent(requested);
    for (let attempt = 1; attempt <= 2; attempt++) {
      const error = await rpcError(payment.sink.deliverOne(first));
      expect(error.code).toBe(Code.Unavailable);
      expect(error.rawMessage).toContain(requested.orderId);
      const recorded = await recordedFor(payment.service, requested.orderId);
      expect(recorded).toEqual({ payments: [], ledger: [], events: [] });
      // The inbox record rolled back too, or the redelivery would be ignored.
      expect(await inInbox(payment.service, first.id)).toBe(false);
    }
    expect((await payment.sink.deliverOne(first)).duplicate).toBe(false);
    const recorded = await recordedFor(payment.service, requested.orderId);
    expect(recorded.payments).toMatchObject([{ status: "CAPTURED" }]);
    expect(recorded.events).toHaveLength(1);
    expect(chargesFor(requested.orderId)).toHaveLength(3);
  });

  it("delivered twice is handled once", async () => {
    const requested = paymentRequested();
    const { event } = await deliver(requested);
    expect((await payment.sink.deliverOne(event)).duplicate).toBe(true);
    const recorded = await recordedFor(payment.service, requested.orderId);
    expect(recorded.payments).toHaveLength(1);
    expect(recorded.events).toHaveLength(1);
    expect(chargesFor(requested.orderId)).toHaveLength(1);
  });

  it("for an order that already has a payment changes nothing and charges nothing", async () => {
    const requested = paymentRequested();
    await deliver(requested);
    // Another event for the same order (the order service asked again), even for more money.
    const again = await deliver({ ...requested, amount: { currencyCode: "EUR", amountMinor: 1n } });
    expect(again.response.duplicate).toBe(false);
    expect(await inInbox(payment.service, again.event.id)).toBe(true);
    const recorded = await recordedFor(payment.service, requested.orderId);
    expect(recorded.payments).toMatchObject([{ amountMinor: 12_900n }]);
    expect(recorded.ledger).toHaveLength(2);
    expect(recorded.events).toHaveLength(1);
    expect(chargesFor(requested.orderId)).toHaveLength(1);
  });

  it("racing another event for the same order still makes one payment (the UNIQUE order id)", async () => {
    const requested = paymentRequested();
    // Hold each charge until both deliveries have passed the "already paid?" check, so the
    // unique constraint has to decide. PGlite runs transactions one at a time; there the
    // second delivery finds the payment instead, and the wait just times out.
    let arrived = 0;
    let bothArrived: () => void = () => {};
    const together = new Promise<void>((resolve) => {
      bothArrived = resolve;
    });
    beforeCharge = async () => {
      if (++arrived === 2) bothArrived();
      await Promise.race([together, new Promise((resolve) => setTimeout(resolve, 1000))]);
    };
    const events = [paymentRequestedEvent(requested), paymentRequestedEvent(requested)];
    const responses = await Promise.all(events.map((event) => payment.sink.deliverOne(event)));
    expect(responses.map((r) => r.duplicate)).toEqual([false, false]);
    const recorded = await recordedFor(payment.service, requested.orderId);
    expect(recorded.payments).toHaveLength(1);
    expect(recorded.ledger).toHaveLength(2);
    expect(recorded.events).toHaveLength(1);
    for (const event of events) expect(await inInbox(payment.service, event.id)).toBe(true);
    if (payment.testDatabase.kind === "postgres") {
      // Both charged (with the same idempotency key, so once at the provider): UNIQUE decided.
      expect(chargesFor(requested.orderId)).toHaveLength(2);
    }
  });

  it("cannot get a second payment row for an order, whatever writes it", async () => {
    const requested = paymentRequested();
    await deliver(requested);
    const [existing] = (await recordedFor(payment.service, requested.orderId)).payments;
    const error = await payment.service.database.db
      .insert(payments)
      .values({ ...existing!, id: randomUUID() })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(isUniqueViolation(error, "payments_order_id_unique")).toBe(true);
  });

  it("that breaks the contract is refused as invalid_argument (parked at once), writing nothing", async () => {
    const requested = paymentRequested({ amount: undefined });
    const event = paymentRequestedEvent(requested);
    const error = await rpcError(payment.sink.deliverOne(event));
    expect(error.code).toBe(Code.InvalidArgument);
    expect(error.rawMessage).toMatch(/amount is required/);
    expect(await inInbox(payment.service, event.id)).toBe(false);
    expect((await recordedFor(payment.service, requested.orderId)).payments).toEqual([]);
  });
});
