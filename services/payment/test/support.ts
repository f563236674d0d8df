// Shared set-up for the payment service's tests: the service on a free port with a test token
// issuer, a stand-in order service that records the events it receives, PaymentRequested
// envelopes like the order service's outbox sends them, and readers of payment's database.
import { randomUUID } from "node:crypto";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { create, fromBinary } from "@bufbuild/protobuf";
import { anyPack, anyUnpack, timestampNow } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { connectNodeAdapter, createConnectTransport } from "@connectrpc/connect-node";
import {
  type Event,
  EventSchema,
  EventSinkService,
} from "@thinmesh/contracts/shop/events/v1/events_pb.js";
import {
  PaymentCapturedSchema,
  PaymentDeclinedSchema,
  PaymentRequestedSchema,
} from "@thinmesh/contracts/shop/events/v1/saga_pb.js";
import { PaymentService } from "@thinmesh/contracts/shop/payment/v1/payment_pb.js";
import { inbox, outboxEvents, type RunningService, startService } from "@thinmesh/platform";
import {
  createTestDatabase,
  createTestIssuer,
  type TestDatabase,
  type TestIssuer,
  testEnv,
} from "@thinmesh/platform/testing";
import { asc, eq } from "drizzle-orm";
import { ledgerEntries, payments, type schema } from "../src/db/schema.js";
import { definePaymentService, type PaymentServiceOptions } from "../src/service.js";

/** A stand-in for the order service's EventSinkService: records every event delivered. */
export interface RecordingSink {
  url: string;
  events: Event[];
  close(): Promise<void>;
}

export async function startRecordingSink(): Promise<RecordingSink> {
  const events: Event[] = [];
  const server = createServer(
    connectNodeAdapter({
      routes: (router) =>
        router.service(EventSinkService, {
          async deliver(request) {
            const duplicate = events.some((e) => e.id === request.event!.id);
            if (!duplicate) events.push(request.event!);
            return { duplicate };
          },
        }),
    }),
  );
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    events,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export interface TestPayment {
  service: RunningService<typeof schema>;
  issuer: TestIssuer;
  order: RecordingSink;
  testDatabase: TestDatabase;
  /** Payment's EventSinkService, as the order service's relay calls it. */
  sink: ReturnType<typeof sinkClient>;
  /** PaymentService over Connect (HTTP/1.1). */
  client: ReturnType<typeof paymentClient>;
  stop(): Promise<void>;
}

/** The payment service on a free port; its events go to a recording order sink. */
export async function startTestPayment(
  label: string,
  extra: Record<string, string> = {},
  options: PaymentServiceOptions = {},
): Promise<TestPayment> {
  const issuer = await createTestIssuer();
  const order = await startRecordingSink();
  const testDatabase = await createTestDatabase(label);
  const service = await startService(
    definePaymentService(options),
    testEnv(testDatabase, {
      AUTH_JWKS_URL: issuer.jwksUrl,
      ORDER_URL: order.url,
      OUTBOX_POLL_MS: "50",
      ...extra,
    }),
  );
  await service.ready;
  return {
    service,
    issuer,
    order,
    testDatabase,
    sink: sinkClient(service.url),
    client: paymentClient(service.url),
    async stop() {
      await service.stop();
      await testDatabase.drop();
      await order.close();
      await issuer.close();
    },
  };
}

export const sinkClient = (baseUrl: string) =>
  createClient(EventSinkService, createConnectTransport({ baseUrl, httpVersion: "1.1" }));

export const paymentClient = (baseUrl: string) =>
  createClient(PaymentService, createConnectTransport({ baseUrl, httpVersion: "1.1" }));

/** The fields of a PaymentRequested, as the order service fills them. */
export interface PaymentRequestedFields {
  orderId: string;
  userId: string;
  amount: { currencyCode: string; amountMinor: bigint } | undefined;
  paymentToken: string;
}

/** A PaymentRequested for a new order: 129.00 EUR, a card that works, unless overridden. */
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
  return create(EventSchema, {
    id: randomUUID(),
    source: "order",
    type: PaymentRequestedSchema.typeName,
    subject: requested.orderId,
    time: timestampNow(),
    data: anyPack(PaymentRequestedSchema, create(PaymentRequestedSchema, requested)),
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
  const outbox = await db.select().from(outboxEvents).where(eq(outboxEvents.subject, orderId));
  return { payments: paymentRows, ledger, events: outbox.map((row) => decodeEvent(row.envelope)) };
}

/** Whether payment's inbox recorded the event as handled. */
export async function inInbox(service: TestPayment["service"], eventId: string) {
  const rows = await service.database.db.select().from(inbox).where(eq(inbox.eventId, eventId));
  return rows.length > 0;
}

/** An outbox envelope with its data unpacked (PaymentCaptured or PaymentDeclined). */
export function decodeEvent(envelope: Uint8Array) {
  const event = fromBinary(EventSchema, envelope);
  return { envelope: event, ...unpack(event) };
}

export function unpack(event: Event) {
  return {
    type: event.type,
    subject: event.subject,
    captured: event.data && anyUnpack(event.data, PaymentCapturedSchema),
    declined: event.data && anyUnpack(event.data, PaymentDeclinedSchema),
  };
}

export async function eventually<T>(check: () => Promise<T>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await check();
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}
