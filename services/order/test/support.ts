// Shared set-up for the order service's tests: the service on a free port with a test token
// issuer, a fake catalog (GetProducts and an event sink) and a fake payment sink in its place,
// clients, a way to deliver saga events, and views of the order database and its outbox.
import { randomUUID } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import {
  create,
  createRegistry,
  type DescMessage,
  fromBinary,
  type MessageInitShape,
} from "@bufbuild/protobuf";
import { anyPack, anyUnpack, timestampNow } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { connectNodeAdapter, createConnectTransport } from "@connectrpc/connect-node";
import { CatalogService } from "@thinmesh/contracts/shop/catalog/v1/catalog_pb.js";
import {
  type Event,
  EventSchema,
  EventSinkService,
} from "@thinmesh/contracts/shop/events/v1/events_pb.js";
import {
  OrderCancelledSchema,
  OrderConfirmedSchema,
  OrderPlacedSchema,
  PaymentRequestedSchema,
} from "@thinmesh/contracts/shop/events/v1/saga_pb.js";
import { OrderService } from "@thinmesh/contracts/shop/order/v1/order_pb.js";
import { outboxEvents, type RunningService, rowsOf, startService } from "@thinmesh/platform";
import {
  createTestDatabase,
  createTestIssuer,
  type TestDatabase,
  type TestIssuer,
  testEnv,
} from "@thinmesh/platform/testing";
import { asc, eq, sql } from "drizzle-orm";
import type { schema } from "../src/db/schema.js";
import { orderService } from "../src/service.js";

export interface FakeProduct {
  id: string;
  sku: string;
  name: string;
  price: { currencyCode: string; amountMinor: bigint };
}

/** A stand-in for a peer: its base URL and the events its EventSinkService received. */
export interface FakePeer {
  url: string;
  received: Event[];
  close(): Promise<void>;
}

/** The catalog as order sees it: GetProducts over a product map, and an event sink. */
export interface FakeCatalog extends FakePeer {
  products: Map<string, FakeProduct>;
  /** How many GetProducts calls it answered. */
  calls: number;
  /** Delay every GetProducts answer (to line concurrent PlaceOrder calls up). */
  delayMs: number;
  /** Adds a product with a fresh id and SKU; returns it. */
  add(overrides?: Partial<FakeProduct>): FakeProduct;
}

async function listen(server: Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

const closeServer = (server: Server) =>
  new Promise<void>((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  });

let skuCounter = 0;

export async function startFakeCatalog(): Promise<FakeCatalog> {
  const fake = {
    products: new Map<string, FakeProduct>(),
    received: [] as Event[],
    calls: 0,
    delayMs: 0,
  };
  const server = createServer(
    connectNodeAdapter({
      routes(router) {
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
        });
        router.service(EventSinkService, {
          async deliver(request) {
            fake.received.push(request.event!);
            return { duplicate: false };
          },
        });
      },
    }),
  );
  const url = await listen(server);
  return Object.assign(fake, {
    url,
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
    close: () => closeServer(server),
  });
}

/** The payment service as order sees it: an event sink that records PaymentRequested. */
export async function startFakeSink(): Promise<FakePeer> {
  const received: Event[] = [];
  const server = createServer(
    connectNodeAdapter({
      routes(router) {
        router.service(EventSinkService, {
          async deliver(request) {
            received.push(request.event!);
            return { duplicate: false };
          },
        });
      },
    }),
  );
  const url = await listen(server);
  return { url, received, close: () => closeServer(server) };
}

export interface TestOrder {
  service: RunningService<typeof schema>;
  issuer: TestIssuer;
  catalog: FakeCatalog;
  payment: FakePeer;
  testDatabase: TestDatabase;
  client: ReturnType<typeof orderClient>;
  sink: ReturnType<typeof sinkClient>;
  stop(): Promise<void>;
}

/** The order service on a free port, with its peers faked and a quick outbox relay. */
export async function startTestOrder(
  label: string,
  extra: Record<string, string> = {},
): Promise<TestOrder> {
  const issuer = await createTestIssuer();
  const catalog = await startFakeCatalog();
  const payment = await startFakeSink();
  const testDatabase = await createTestDatabase(label);
  const service = await startService(
    orderService,
    testEnv(testDatabase, {
      AUTH_JWKS_URL: issuer.jwksUrl,
      CATALOG_URL: catalog.url,
      PAYMENT_URL: payment.url,
      OUTBOX_POLL_MS: "50",
      ...extra,
    }),
  );
  await service.ready;
  return {
    service,
    issuer,
    catalog,
    payment,
    testDatabase,
    client: orderClient(service.url),
    sink: sinkClient(service.url),
    async stop() {
      await service.stop();
      await testDatabase.drop();
      await Promise.all([issuer.close(), catalog.close(), payment.close()]);
    },
  };
}

/** A Connect client over HTTP/1.1, as curl or a browser would talk. */
export function orderClient(baseUrl: string) {
  return createClient(OrderService, createConnectTransport({ baseUrl, httpVersion: "1.1" }));
}

export function sinkClient(baseUrl: string) {
  return createClient(EventSinkService, createConnectTransport({ baseUrl, httpVersion: "1.1" }));
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
  id: string = randomUUID(),
): Event {
  return create(EventSchema, {
    id,
    source: schema.typeName.includes("Payment") ? "payment" : "catalog",
    type: schema.typeName,
    subject: data.orderId,
    time: timestampNow(),
    data: anyPack(schema, create(schema, data)),
  });
}

/** A W3C traceparent with a fresh trace id, and that trace id. */
export function newTrace() {
  const traceId = randomUUID().replace(/-/g, "");
  return { traceId, traceparent: `00-${traceId}-${traceId.slice(0, 16)}-01` };
}

const producedRegistry = createRegistry(
  OrderPlacedSchema,
  PaymentRequestedSchema,
  OrderConfirmedSchema,
  OrderCancelledSchema,
);

export interface PublishedEvent {
  envelope: Event;
  type: string;
  // biome-ignore lint/suspicious/noExplicitAny: tests read whichever event type it is
  data: any;
}

export function unpack(envelope: Event): PublishedEvent {
  return {
    envelope,
    type: envelope.type,
    data: envelope.data && anyUnpack(envelope.data, producedRegistry),
  };
}

/** What order's outbox holds for one order, oldest first. */
export async function publishedFor(
  service: RunningService<typeof schema>,
  orderId: string,
): Promise<PublishedEvent[]> {
  const rows = await service.database.db
    .select({ envelope: outboxEvents.envelope })
    .from(outboxEvents)
    .where(eq(outboxEvents.subject, orderId))
    .orderBy(asc(outboxEvents.createdAt));
  return rows.map((row) => unpack(fromBinary(EventSchema, row.envelope)));
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

export async function eventually<T>(check: () => Promise<T> | T, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await check();
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((r) => setTimeout(r, 25));
    }
  }
}
