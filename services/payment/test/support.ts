// Shared set-up for the payment service's tests: the service on a free port with a test token
// issuer, a stand-in order service that records the events it receives, PaymentRequested
// envelopes like the order service's outbox sends them, and readers of payment's database.
import { randomUUID } from "node:crypto";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import type { Event } from "@thinmesh/contracts/shop/events/v1/events_pb.js";
import {
  PaymentCapturedSchema,
  PaymentDeclinedSchema,
  PaymentRequestedSchema,
} from "@thinmesh/contracts/shop/events/v1/saga_pb.js";
import { PaymentService } from "@thinmesh/contracts/shop/payment/v1/payment_pb.js";
import { inbox } from "@thinmesh/platform";
import {
  buildEventEnvelope,
  type DecodedEvent,
  decodeEvent,
  eventSinkClient,
  eventually,
  type RecordingEventSink,
  readOutboxEvents,
  startRecordingEventSink,
  startTestService,
  type TestService,
} from "@thinmesh/platform/testing";
import { asc, eq } from "drizzle-orm";
import { expect } from "vitest";
import { ledgerEntries, payments, type schema } from "../src/db/schema.js";
import { definePaymentService, type PaymentServiceOptions } from "../src/service.js";

export interface TestPayment extends TestService<typeof schema> {
  /** Stands in for the order service's EventSinkService: records every event delivered. */
  order: RecordingEventSink;
  /** Payment's EventSinkService, as the order service's relay calls it. */
  sink: ReturnType<typeof eventSinkClient>;
  /** PaymentService over Connect (HTTP/1.1). */
  client: ReturnType<typeof paymentClient>;
}

/** The payment service on a free port; its events go to a recording order sink. */
export async function startTestPayment(
  label: string,
  extra: Record<string, string> = {},
  options: PaymentServiceOptions = {},
): Promise<TestPayment> {
  const order = await startRecordingEventSink();
  const started = await startTestService(definePaymentService(options), label, {
    ORDER_URL: order.url,
    OUTBOX_POLL_MS: "50",
    PAYMENT_CHARGE_POLL_MS: "50",
    ...extra,
  });
  return {
    ...started,
    order,
    sink: eventSinkClient(started.service.url),
    client: paymentClient(started.service.url),
    async stop() {
      await started.stop();
      await order.close();
    },
  };
}

export const paymentClient = (baseUrl: string) =>
  createClient(PaymentService, createConnectTransport({ baseUrl, httpVersion: "1.1" }));

/** The fields of a PaymentRequested, as the order service fills them. */
export interface PaymentRequestedFields {
  orderId: string;
  userId: string;
  amount: { currencyCode: string; amountMinor: bigint } | undefined;
  paymentToken: string;
}

/** A PaymentRequested for a new order: EUR 129.00, a card that works, unless overridden. */
export function paymentRequested(
  overrides: Partial<PaymentRequestedFields> = {},
): PaymentRequestedFields {
  return {
    orderId: randomUUID(),
    userId: randomUUID(),
    amount: { currencyCode: "EUR", amountMinor: 12_900n },
    paymentToken: "tok_visa",
    ...overrides,
  };
}

/** The envelope the order service's outbox would deliver for a PaymentRequested. */
export function paymentRequestedEvent(requested: PaymentRequestedFields): Event {
  return buildEventEnvelope(PaymentRequestedSchema, requested, {
    source: "order",
    subject: requested.orderId,
  });
}

/** What payment's database holds for an order: payments, ledger, outbox events. */
export async function recordedFor(service: TestPayment["service"], orderId: string) {
  const { db } = service.database;
  const paymentRows = await db.select().from(payments).where(eq(payments.orderId, orderId));
  const ledger = paymentRows[0]
    ? await db
        .select()
        .from(ledgerEntries)
        .where(eq(ledgerEntries.paymentId, paymentRows[0].id))
        .orderBy(asc(ledgerEntries.position))
    : [];
  const events = await readOutboxEvents(db, { subject: orderId }, produced);
  return { payments: paymentRows, ledger, events: events.map(withOutcome) };
}

/** What payment's database holds for an order once its charge is settled (not PENDING). */
export async function settledFor(service: TestPayment["service"], orderId: string) {
  return eventually(async () => {
    const recorded = await recordedFor(service, orderId);
    expect(recorded.payments.map((p) => p.status)).toEqual([
      expect.stringMatching(/^(CAPTURED|DECLINED)$/),
    ]);
    expect(recorded.events).toHaveLength(1);
    return recorded;
  });
}

/** How payment's inbox recorded the event, if it did. */
export async function inboxOutcome(service: TestPayment["service"], eventId: string) {
  const [row] = await service.database.db
    .select({ outcome: inbox.outcome, refusal: inbox.refusal })
    .from(inbox)
    .where(eq(inbox.eventId, eventId));
  return row;
}

/** Whether payment's inbox recorded the event as handled. */
export async function inInbox(service: TestPayment["service"], eventId: string) {
  const rows = await service.database.db.select().from(inbox).where(eq(inbox.eventId, eventId));
  return rows.length > 0;
}

/** The event types payment publishes. */
const produced = [PaymentCapturedSchema, PaymentDeclinedSchema];

/** A decoded event with its data as `captured` or `declined`, whichever it is. */
function withOutcome(event: DecodedEvent) {
  return {
    ...event,
    captured: event.type === PaymentCapturedSchema.typeName ? event.data : undefined,
    declined: event.type === PaymentDeclinedSchema.typeName ? event.data : undefined,
  };
}

/** An event payment published (PaymentCaptured or PaymentDeclined), with its data unpacked. */
export const unpack = (event: Event) => withOutcome(decodeEvent(event, produced));
