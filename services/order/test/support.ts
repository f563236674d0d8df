// Shared set-up for the order service's tests: the service on a free port with a test token
// issuer, a fake catalog (GetProducts and an event sink) and a fake payment sink in its place,
// clients, a way to deliver saga events, and views of the order database and its outbox.
import { randomUUID } from "node:crypto";
import type { DescMessage, MessageInitShape } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { CatalogService } from "@thinmesh/contracts/shop/catalog/v1/catalog_pb.js";
import type { Event } from "@thinmesh/contracts/shop/events/v1/events_pb.js";
import {
  OrderCancelledSchema,
  OrderConfirmedSchema,
  OrderPlacedSchema,
  PaymentRequestedSchema,
} from "@thinmesh/contracts/shop/events/v1/saga_pb.js";
import { OrderService } from "@thinmesh/contracts/shop/order/v1/order_pb.js";
import { type RunningService, rowsOf } from "@thinmesh/platform";
import {
  buildEventEnvelope,
  type DecodedEvent,
  decodeEvent,
  eventSinkClient,
  type RecordingEventSink,
  readOutboxEvents,
  startRecordingEventSink,
  startTestService,
  type TestIssuer,
  type TestService,
} from "@thinmesh/platform/testing";
import { sql } from "drizzle-orm";
import type { schema } from "../src/db/schema.js";
import { orderService } from "../src/service.js";

export interface FakeProduct {
  id: string;
  sku: string;
  name: string;
  price: { currencyCode: string; amountMinor: bigint };
}

/** The catalog as order sees it: GetProducts over a product map, and an event sink. */
export interface FakeCatalog extends RecordingEventSink {
  products: Map<string, FakeProduct>;
  /** How many GetProducts calls it answered. */
  calls: number;
  /** Delay every GetProducts answer (to line concurrent PlaceOrder calls up). */
  delayMs: number;
  /** Adds a product with a fresh id and SKU; returns it. */
  add(overrides?: Partial<FakeProduct>): FakeProduct;
}

let skuCounter = 0;

export async function startFakeCatalog(): Promise<FakeCatalog> {
  const fake = {
    products: new Map<string, FakeProduct>(),
    calls: 0,
    delayMs: 0,
  };
  const sink = await startRecordingEventSink((router) =>
    router.service(CatalogService, {
      async getProducts(request) {
        fake.calls++;
        if (fake.delayMs) await new Promise((r) => setTimeout(r, fake.delayMs));
        const products = request.ids.flatMap((id) => {
          const product = fake.products.get(id.toLowerCase());
          return product ? [product] : [];
        });
        const missingIds = request.ids.filter((id) => !fake.products.has(id.toLowerCase()));
        return { products, missingIds };
      },
    }),
  );
  return Object.assign(fake, sink, {
    add(overrides: Partial<FakeProduct> = {}) {
      const product: FakeProduct = {
        id: randomUUID(),
        sku: `SKU-${++skuCounter}-${randomUUID().slice(0, 4).toUpperCase()}`,
        name: `Product ${skuCounter}`,
        price: { currencyCode: "EUR", amountMinor: 1290n },
        ...overrides,
      };
      fake.products.set(product.id, product);
      return product;
    },
  });
}

export interface TestOrder extends TestService<typeof schema> {
  catalog: FakeCatalog;
  /** The payment service as order sees it: an event sink that records PaymentRequested. */
  payment: RecordingEventSink;
  client: ReturnType<typeof orderClient>;
  /** Order's EventSinkService, as the catalog's and payment's relays call it. */
  sink: ReturnType<typeof eventSinkClient>;
}

/** The order service on a free port, with its peers faked and a quick outbox relay. */
export async function startTestOrder(
  label: string,
  extra: Record<string, string> = {},
): Promise<TestOrder> {
  const catalog = await startFakeCatalog();
  const payment = await startRecordingEventSink();
  const started = await startTestService(orderService, label, {
    CATALOG_URL: catalog.url,
    PAYMENT_URL: payment.url,
    OUTBOX_POLL_MS: "50",
    ...extra,
  });
  return {
    ...started,
    catalog,
    payment,
    client: orderClient(started.service.url),
    sink: eventSinkClient(started.service.url),
    async stop() {
      await started.stop();
      await Promise.all([catalog.close(), payment.close()]);
    },
  };
}

/** A Connect client over HTTP/1.1, as curl or a browser would talk. */
export function orderClient(baseUrl: string) {
  return createClient(OrderService, createConnectTransport({ baseUrl, httpVersion: "1.1" }));
}

export const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });

/** A user: an id and a token for it. */
export async function newUser(issuer: TestIssuer, roles = ["customer"]) {
  const id = randomUUID();
  return { id, auth: bearer(await issuer.token({ subject: id, roles })) };
}

/** A saga event envelope as catalog or payment would send it (subject = the order id). */
export function sagaEvent<Desc extends DescMessage>(
  schema: Desc,
  data: MessageInitShape<Desc> & { orderId: string },
): Event {
  return buildEventEnvelope(schema, data, {
    source: schema.typeName.includes("Payment") ? "payment" : "catalog",
    subject: data.orderId,
  });
}

/** A W3C traceparent with a fresh trace id, and that trace id. */
export function newTrace() {
  const traceId = randomUUID().replace(/-/g, "");
  return { traceId, traceparent: `00-${traceId}-${traceId.slice(0, 16)}-01` };
}

/** The event types order publishes. */
const produced = [
  OrderPlacedSchema,
  PaymentRequestedSchema,
  OrderConfirmedSchema,
  OrderCancelledSchema,
];

/** An event order published, with its data unpacked. */
export const unpack = (envelope: Event): DecodedEvent => decodeEvent(envelope, produced);

/** What order's outbox holds for one order, oldest first. */
export function publishedFor(
  service: RunningService<typeof schema>,
  orderId: string,
): Promise<DecodedEvent[]> {
  return readOutboxEvents(service.database.db, { subject: orderId }, produced);
}

/** Row counts of every table a write could touch. */
export async function rowCounts(service: RunningService<typeof schema>) {
  const [counts] = rowsOf<{
    orders: number;
    items: number;
    timeline: number;
    events: number;
    inbox: number;
  }>(
    await service.database.db.execute(sql`
      select (select count(*)::int from orders) as orders,
             (select count(*)::int from order_items) as items,
             (select count(*)::int from order_timeline) as timeline,
             (select count(*)::int from outbox_events) as events,
             (select count(*)::int from inbox) as inbox`),
  );
  return counts!;
}
