// PaymentRequested events delivered to payment's EventSinkService over a real port, as the
// order service's outbox relay does: what payment records (payments, ledger, inbox, outbox),
// what reaches the order service, and how often the provider is called.
import { randomUUID } from "node:crypto";
import { Code } from "@connectrpc/connect";
import { isUniqueViolation } from "@thinmesh/platform";
import { eventually, rpcError } from "@thinmesh/platform/testing";
import { sql } from "drizzle-orm";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { payments } from "../src/db/schema.js";
import type { ChargeRequest } from "../src/domain/provider.js";
import { testTokens } from "../src/domain/simulator.js";
import { simulatorFor } from "../src/service.js";
import {
  inboxOutcome,
  inInbox,
  paymentRequested,
  paymentRequestedEvent,
  recordedFor,
  settledFor,
  startTestPayment,
  type TestPayment,
  unpack,
} from "./support.js";

let payment: TestPayment;
/** Every charge the service asked the (simulated) provider for. */
const charges: ChargeRequest[] = [];
/** Runs before each charge reaches the simulator (to hold one, or check what is committed). */
let beforeCharge: ((request: ChargeRequest) => Promise<void>) | undefined;

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
            await beforeCharge?.(request);
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
  // In a trace of its own, as the order service's step that published it.
  const traceId = randomUUID().replace(/-/g, "");
  const event = {
    ...paymentRequestedEvent(requested),
    traceparent: `00-${traceId}-${traceId.slice(0, 16)}-01`,
  };
  const response = await payment.sink.deliverOne(event);
  return { event, response };
}

const chargesFor = (orderId: string) => charges.filter((c) => c.orderId === orderId);

describe("a PaymentRequested", () => {
  it("captures the charge: payment, balanced ledger, PaymentCaptured in the outbox", async () => {
    const requested = paymentRequested({ amount: { currencyCode: "EUR", amountMinor: 12_900n } });
    const { event, response } = await deliver(requested);
    expect(response.duplicate).toBe(false);
    const recorded = await settledFor(payment.service, requested.orderId);
    expect(recorded.payments).toEqual([
      expect.objectContaining({
        orderId: requested.orderId,
        userId: requested.userId,
        status: "CAPTURED",
        amountMinor: 12_900n,
        currency: "EUR",
        providerReference: expect.stringMatching(/^sim_/),
        declineReason: null,
        // Forgotten once the charge is made.
        paymentToken: null,
        chargeAttempts: 1,
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
    // In the trace of the request, though charged after its transaction.
    expect(published?.envelope.traceparent.split("-")[1]).toBe(event.traceparent.split("-")[1]);
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
    const recorded = await settledFor(payment.service, requested.orderId);
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
    const recorded = await settledFor(payment.service, requested.orderId);
    expect(recorded.payments).toMatchObject([
      { status: "DECLINED", declineReason: "card declined" },
    ]);
    expect(recorded.events).toMatchObject([{ declined: { reason: "card declined" } }]);
  });

  it("is accepted at once and charged outside the inbox transaction, which has committed", async () => {
    const requested = paymentRequested();
    const event = paymentRequestedEvent(requested);
    // The delivery is answered while the provider call is held: no transaction waits for the
    // provider. Another connection then sees the PENDING intent and the inbox record.
    let answered = false;
    const seenDuringCharge: unknown[] = [];
    beforeCharge = async (charge) => {
      if (charge.orderId !== requested.orderId) return;
      const holdUntil = Date.now() + 3_000;
      while (!answered && Date.now() < holdUntil) await new Promise((r) => setTimeout(r, 20));
      const [row] = (await recordedFor(payment.service, requested.orderId)).payments;
      seenDuringCharge.push(answered, row?.status, await inInbox(payment.service, event.id));
    };
    expect(await payment.sink.deliverOne(event)).toEqual({ duplicate: false });
    answered = true;
    await settledFor(payment.service, requested.orderId);
    expect(seenDuringCharge).toEqual([true, "PENDING", true]);
  });

  it("is retried by payment itself while the provider fails transiently: charged 3 times, captured once", async () => {
    const requested = paymentRequested({ paymentToken: testTokens.flaky });
    const event = paymentRequestedEvent(requested);
    // The sender is not asked to retry: the intent is recorded.
    expect(await payment.sink.deliverOne(event)).toEqual({ duplicate: false });
    expect(await inInbox(payment.service, event.id)).toBe(true);
    const recorded = await settledFor(payment.service, requested.orderId);
    expect(recorded.payments).toMatchObject([
      { status: "CAPTURED", chargeAttempts: 3, lastError: null },
    ]);
    expect(recorded.ledger).toHaveLength(2);
    expect(chargesFor(requested.orderId)).toHaveLength(3);
  });

  it("calls the provider once per order through a batch replayed one by one and redeliveries", async () => {
    const seen = paymentRequested();
    const seenEvent = (await deliver(seen)).event;
    await settledFor(payment.service, seen.orderId);
    const fresh = [paymentRequested(), paymentRequested(), paymentRequested()];
    const flaky = paymentRequested({ paymentToken: testTokens.flaky });
    const events = [...fresh, flaky].map(paymentRequestedEvent);
    // The event seen before rolls the batch back; the others are applied again without it.
    const { results } = await payment.sink.deliver({ events: [seenEvent, ...events] });
    expect(results.map((r) => [r.duplicate, r.error])).toEqual([
      [true, undefined],
      ...events.map(() => [false, undefined]),
    ]);
    // And the whole batch again, as a relay that lost the answer would.
    await payment.sink.deliver({ events: [seenEvent, ...events] });
    for (const requested of [...fresh, flaky]) await settledFor(payment.service, requested.orderId);
    for (const requested of [seen, ...fresh]) {
      expect(chargesFor(requested.orderId)).toHaveLength(1);
    }
    // More only after a transient provider error: its two failures, then the capture.
    expect(chargesFor(flaky.orderId)).toHaveLength(3);
  });

  it("left pending by a process that died before the provider answered is charged again, with the same key", async () => {
    const requested = paymentRequested();
    const paymentId = randomUUID();
    // What a crash between the intent's commit and the outcome leaves: a PENDING charge,
    // attempted once, whose lease has run out.
    await payment.service.database.db.execute(sql`
      insert into payments (id, order_id, user_id, status, amount_minor, currency, payment_token,
                            charge_attempts, lease_until)
      values (${paymentId}, ${requested.orderId}, ${requested.userId}, 'PENDING',
              ${requested.amount!.amountMinor.toString()}, 'EUR', 'tok_visa', 1,
              now() - interval '1 second')`);
    const recorded = await settledFor(payment.service, requested.orderId);
    expect(recorded.payments).toMatchObject([
      { id: paymentId, status: "CAPTURED", chargeAttempts: 2 },
    ]);
    expect(recorded.events).toMatchObject([{ captured: { paymentId } }]);
    expect(chargesFor(requested.orderId)).toEqual([
      expect.objectContaining({ idempotencyKey: requested.orderId }),
    ]);
  });

  it("delivered twice is handled once", async () => {
    const requested = paymentRequested();
    const { event } = await deliver(requested);
    expect((await payment.sink.deliverOne(event)).duplicate).toBe(true);
    const recorded = await settledFor(payment.service, requested.orderId);
    expect(recorded.payments).toHaveLength(1);
    expect(recorded.events).toHaveLength(1);
    expect(chargesFor(requested.orderId)).toHaveLength(1);
  });

  it("asked again for the same order and amount (a new event) changes nothing and charges nothing", async () => {
    const requested = paymentRequested();
    await deliver(requested);
    await settledFor(payment.service, requested.orderId);
    const again = await deliver(requested);
    expect(again.response.duplicate).toBe(false);
    expect(await inboxOutcome(payment.service, again.event.id)).toEqual({
      outcome: "applied",
      refusal: null,
    });
    const recorded = await recordedFor(payment.service, requested.orderId);
    expect(recorded.payments).toHaveLength(1);
    expect(recorded.events).toHaveLength(1);
    expect(chargesFor(requested.orderId)).toHaveLength(1);
  });

  it("refuses a second request for the order with another amount or customer, charging nothing", async () => {
    const requested = paymentRequested();
    await deliver(requested);
    await settledFor(payment.service, requested.orderId);
    const cheaper = await deliver({
      ...requested,
      amount: { currencyCode: "EUR", amountMinor: 1n },
    });
    const otherCustomer = await deliver({ ...requested, userId: randomUUID() });
    expect(cheaper.response.duplicate).toBe(false);
    expect(await inboxOutcome(payment.service, cheaper.event.id)).toEqual({
      outcome: "refused",
      refusal: expect.stringMatching(
        /already has a payment request for EUR 129.00, but this one asks for EUR 0.01/,
      ),
    });
    expect(await inboxOutcome(payment.service, otherCustomer.event.id)).toMatchObject({
      outcome: "refused",
    });
    const recorded = await recordedFor(payment.service, requested.orderId);
    expect(recorded.payments).toMatchObject([{ amountMinor: 12_900n, userId: requested.userId }]);
    expect(recorded.ledger).toHaveLength(2);
    expect(recorded.events).toHaveLength(1);
    expect(chargesFor(requested.orderId)).toHaveLength(1);
  });

  it("racing another event for the same order makes one payment and one charge (the UNIQUE order id)", async () => {
    const requested = paymentRequested();
    const events = [paymentRequestedEvent(requested), paymentRequestedEvent(requested)];
    const responses = await Promise.all(events.map((event) => payment.sink.deliverOne(event)));
    expect(responses.map((r) => r.duplicate)).toEqual([false, false]);
    const recorded = await settledFor(payment.service, requested.orderId);
    expect(recorded.payments).toHaveLength(1);
    expect(recorded.ledger).toHaveLength(2);
    for (const event of events) expect(await inInbox(payment.service, event.id)).toBe(true);
    expect(chargesFor(requested.orderId)).toHaveLength(1);
  });

  it("cannot get a second payment row for an order, whatever writes it", async () => {
    const requested = paymentRequested();
    await deliver(requested);
    const [existing] = (await settledFor(payment.service, requested.orderId)).payments;
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
