// The order saga end to end: four real service processes on the real Postgres behind the
// local ingress (mesh/local), driven through the ingress like a customer would.
import { randomBytes, randomUUID } from "node:crypto";
import { fromBinary } from "@bufbuild/protobuf";
import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { CatalogService } from "@thinmesh/contracts/shop/catalog/v1/catalog_pb.js";
import { EventSchema, EventSinkService } from "@thinmesh/contracts/shop/events/v1/events_pb.js";
import {
  type Order,
  OrderService,
  OrderStatus,
} from "@thinmesh/contracts/shop/order/v1/order_pb.js";
import { connectPostgres } from "@thinmesh/platform";
import { rpcError, testPostgresUrl } from "@thinmesh/platform/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  checkInvariants,
  type DatabaseUrls,
  type StockSnapshot,
  settle,
  snapshotStock,
} from "../../mesh/local/src/invariants.js";
import type { LocalShop } from "../../mesh/local/src/shop.js";
import type { AccessRecord } from "../../mesh/local/src/sidecar/telemetry.js";
import { startTestShop, type TestShop } from "./local-shop.js";

const serverUrl = await testPostgresUrl();
const logLines: string[] = [];
const records: AccessRecord[] = [];
let testShop: TestShop;
let shop: LocalShop;
let urls: DatabaseUrls;
let stockBefore: StockSnapshot;
let customer: string;
let admin: string;

const transport = () => createConnectTransport({ baseUrl: shop.ingressUrl, httpVersion: "1.1" });
const as = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });
const orders = () => createClient(OrderService, transport());
const catalog = () => createClient(CatalogService, transport());

async function outcome(id: string, token = customer, timeoutMs = 20_000): Promise<Order> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { order } = await orders().getOrder({ id }, as(token));
    if (order!.status === OrderStatus.CONFIRMED || order!.status === OrderStatus.CANCELLED)
      return order!;
    if (Date.now() > deadline) throw new Error(`order ${id} still ${OrderStatus[order!.status]}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function newProduct(stock: number, priceMinor = 1000n) {
  const sku = `SAGA-${randomBytes(3).toString("hex").toUpperCase()}`;
  const { product } = await catalog().createProduct(
    {
      sku,
      name: `Saga test ${sku}`,
      price: { currencyCode: "EUR", amountMinor: priceMinor },
      initialStock: stock,
    },
    as(admin),
  );
  return product!;
}

const place = (
  items: { productId: string; quantity: number }[],
  paymentToken = "tok_test_visa",
  idempotencyKey: string = randomUUID(),
) => orders().placeOrder({ idempotencyKey, items, paymentToken }, as(customer));

const stockOf = async (id: string) => (await catalog().getProduct({ id })).product!.stockAvailable;

describe.skipIf(!serverUrl)("the order saga across four processes", () => {
  beforeAll(async () => {
    const fast = {
      OUTBOX_POLL_MS: "100",
      OUTBOX_BASE_BACKOFF_MS: "50",
      OUTBOX_MAX_BACKOFF_MS: "400",
    };
    testShop = await startTestShop("saga", serverUrl!, {
      logLevel: "debug",
      env: { catalog: fast, order: fast, payment: fast },
      events: {
        line: (name, line) => logLines.push(`${name} ${line}`),
        event: (name, msg, fields) => logLines.push(`${name} ${msg} ${JSON.stringify(fields)}`),
      },
      onRecord: (record) => records.push(record),
    });
    ({ shop, admin, customer } = testShop);
    urls = shop.databaseUrls!;
    stockBefore = await snapshotStock(urls);
  }, 120_000);

  afterAll(() => testShop?.stop());

  it("confirms an order, with one trace id from the ingress through every hop", async () => {
    const product = await newProduct(10, 1290n);
    const { order: placed } = await place([{ productId: product.id, quantity: 2 }]);
    expect(placed!.status).toBe(OrderStatus.PENDING);
    const order = await outcome(placed!.id);
    expect(order.status).toBe(OrderStatus.CONFIRMED);
    expect(order.total).toMatchObject({ currencyCode: "EUR", amountMinor: 2580n });
    expect(order.timeline.map((t) => t.status)).toEqual([
      OrderStatus.PENDING,
      OrderStatus.AWAITING_PAYMENT,
      OrderStatus.CONFIRMED,
    ]);
    expect(order.traceId).toMatch(/^[0-9a-f]{32}$/);
    for (const entry of order.timeline) expect(entry.traceId).toBe(order.traceId);
    expect(await stockOf(product.id)).toBe(8);
    // Every service logged work for this transaction under the same trace id.
    for (const service of ["order", "catalog", "payment"]) {
      expect(logLines.some((l) => l.startsWith(`${service}-0 `) && l.includes(order.traceId))).toBe(
        true,
      );
    }
    // And every hop went through the sidecars, over mutual TLS, in the same trace: the call
    // graph Kiali would draw from the same access records.
    await new Promise((resolve) => setTimeout(resolve, 200)); // the last delivery's record
    const hops = records
      .filter((r) => r.trace_id === order.traceId && r.reporter === "source")
      .map((r) => `${r.source_workload} -> ${r.destination_workload} ${r.path} ${r.response_code}`);
    const deliver = "/shop.events.v1.EventSinkService/Deliver";
    expect(new Set(hops)).toEqual(
      new Set([
        "istio-ingressgateway -> order /shop.order.v1.OrderService/PlaceOrder 200",
        "order -> catalog /shop.catalog.v1.CatalogService/GetProducts 200",
        `order -> catalog ${deliver} 200`,
        `catalog -> order ${deliver} 200`,
        `order -> payment ${deliver} 200`,
        `payment -> order ${deliver} 200`,
      ]),
    );
    const inbound = records.filter(
      (r) => r.trace_id === order.traceId && r.reporter === "destination",
    );
    expect(inbound.length).toBeGreaterThanOrEqual(5);
    expect(inbound.every((r) => r.connection_security_policy === "mutual_tls")).toBe(true);
  });

  it("cancels an order whose stock cannot be reserved, and changes no stock", async () => {
    const product = await newProduct(1);
    const { order: placed } = await place([{ productId: product.id, quantity: 2 }]);
    const order = await outcome(placed!.id);
    expect(order.status).toBe(OrderStatus.CANCELLED);
    expect(order.cancelReason).toMatch(/stock/);
    expect(await stockOf(product.id)).toBe(1);
  });

  it("cancels an order whose payment is declined, and returns the reserved stock", async () => {
    const product = await newProduct(5);
    const { order: placed } = await place(
      [{ productId: product.id, quantity: 3 }],
      "tok_test_declined",
    );
    const order = await outcome(placed!.id);
    expect(order.status).toBe(OrderStatus.CANCELLED);
    expect(order.cancelReason).toMatch(/declined/);
    const deadline = Date.now() + 10_000;
    while ((await stockOf(product.id)) !== 5 && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 50));
    expect(await stockOf(product.id)).toBe(5);
  });

  it("cancels an order over the payment limit", async () => {
    const product = await newProduct(10, 20_000n);
    const order = await outcome((await place([{ productId: product.id, quantity: 3 }])).order!.id);
    expect(order.status).toBe(OrderStatus.CANCELLED);
    expect(order.cancelReason).toMatch(/limit/);
  });

  it("places one order per idempotency key, however often and concurrently it is sent", async () => {
    const product = await newProduct(10);
    const key = randomUUID();
    const items = [{ productId: product.id, quantity: 1 }];
    const results = await Promise.all(
      Array.from({ length: 5 }, () => place(items, "tok_test_visa", key)),
    );
    const ids = new Set(results.map((r) => r.order!.id));
    expect(ids.size).toBe(1);
    const error = await rpcError(
      place([{ productId: product.id, quantity: 2 }], "tok_test_visa", key),
    );
    expect(error.code).toBe(Code.AlreadyExists);
    expect((await outcome([...ids][0]!)).status).toBe(OrderStatus.CONFIRMED);
    expect(await stockOf(product.id)).toBe(9);
  });

  it("applies an event delivered twice only once", async () => {
    const sql = connectPostgres(urls.order, { max: 1, onnotice: () => {} });
    const [row] = await sql<{ envelope: Uint8Array }[]>`
      select envelope from outbox_events where type = 'shop.events.v1.OrderConfirmed' order by created_at desc limit 1`;
    await sql.end();
    const event = fromBinary(EventSchema, row!.envelope);
    const sink = createClient(
      EventSinkService,
      // As order delivers it: through order's sidecar, as order's identity.
      createConnectTransport({ baseUrl: shop.peerUrl("order", "catalog"), httpVersion: "1.1" }),
    );
    expect((await sink.deliver({ events: [event] })).results).toMatchObject([
      { eventId: event.id, duplicate: true },
    ]);
  });

  it("delivers what a consumer missed while it was down", async () => {
    const payment = shop.processesOf("payment")[0]!;
    await payment.stop();
    const product = await newProduct(4);
    const { order: placed } = await place([{ productId: product.id, quantity: 1 }]);
    await new Promise((resolve) => setTimeout(resolve, 1500));
    const { order: waiting } = await orders().getOrder({ id: placed!.id }, as(customer));
    expect(waiting!.status).toBe(OrderStatus.AWAITING_PAYMENT);
    payment.start();
    expect((await outcome(placed!.id, customer, 30_000)).status).toBe(OrderStatus.CONFIRMED);
  });

  it("keeps every invariant once the saga has settled", async () => {
    await settle(urls);
    const report = await checkInvariants(urls, stockBefore);
    expect(report.violations).toEqual([]);
    expect(report.orders.total).toBeGreaterThanOrEqual(6);
    expect(report.capturedMinor).toBe(report.confirmedTotalMinor);
  });

  it("has an invariant checker that notices broken invariants", async () => {
    const order = connectPostgres(urls.order, { max: 1, onnotice: () => {} });
    const catalogDb = connectPostgres(urls.catalog, { max: 1, onnotice: () => {} });
    try {
      const [victim] = await order<
        { id: string }[]
      >`select id::text from orders where status = 'CONFIRMED' limit 1`;
      const [product] = await catalogDb<
        { id: string }[]
      >`select id::text from products where stock_available > 0 limit 1`;
      await order`update orders set status = 'AWAITING_PAYMENT' where id = ${victim!.id}`;
      await catalogDb`update products set stock_available = stock_available - 1 where id = ${product!.id}`;
      const report = await checkInvariants(urls, stockBefore);
      expect(report.violations).toEqual(
        expect.arrayContaining([
          expect.stringMatching(new RegExp(`orders are not terminal: ${victim!.id}`)),
          expect.stringMatching(/captured money \d+ differs/),
          expect.stringMatching(new RegExp(`product ${product!.id}: .*stock not conserved`)),
        ]),
      );
      await order`update orders set status = 'CONFIRMED' where id = ${victim!.id}`;
      await catalogDb`update products set stock_available = stock_available + 1 where id = ${product!.id}`;
      expect((await checkInvariants(urls, stockBefore)).violations).toEqual([]);
    } finally {
      await order.end();
      await catalogDb.end();
    }
  });
});
