// GetOrder and ListOrders: customers see only their own orders, admins see all; keyset pages
// newest first; and the same port serving gRPC and gRPC-Web.
import { randomUUID } from "node:crypto";
import { Code, createClient } from "@connectrpc/connect";
import { createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import {
  type Order,
  OrderService,
  OrderStatus,
} from "@thinmesh/contracts/shop/order/v1/order_pb.js";
import { rpcError } from "@thinmesh/platform/testing";
import { eq, inArray } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { orders } from "../src/db/schema.js";
import { type FakeProduct, newTrace, newUser, startTestOrder, type TestOrder } from "./support.js";

type User = Awaited<ReturnType<typeof newUser>>;
let t: TestOrder;
let alice: User;
let bob: User;
let admin: User;
let mug: FakeProduct;

beforeAll(async () => {
  t = await startTestOrder("order_reading");
  [alice, bob, admin] = await Promise.all([
    newUser(t.issuer),
    newUser(t.issuer),
    newUser(t.issuer, ["admin", "customer"]),
  ]);
  mug = t.catalog.add();
});
afterAll(async () => {
  await t?.stop();
});

async function place(user: User, quantity = 1): Promise<Order> {
  const { order } = await t.client.placeOrder(
    {
      idempotencyKey: `key-${randomUUID()}`,
      items: [{ productId: mug.id, quantity }],
      paymentToken: "tok_test_visa",
    },
    user.auth,
  );
  return order!;
}

/** Every order a user can list, walking the pages; and the size of each page. */
async function walk(user: User, pageSize: number) {
  const ids: string[] = [];
  const pages: number[] = [];
  const created: bigint[] = [];
  let pageToken = "";
  do {
    const page = await t.client.listOrders({ pageSize, pageToken }, user.auth);
    ids.push(...page.orders.map((o) => o.id));
    created.push(
      ...page.orders.map((o) => o.createTime!.seconds * 1000n + BigInt(o.createTime!.nanos / 1e6)),
    );
    pages.push(page.orders.length);
    pageToken = page.nextPageToken;
  } while (pageToken);
  return { ids, pages, created };
}

describe("GetOrder", () => {
  it("shows the owner the whole order, with the trace id of PlaceOrder", async () => {
    const trace = newTrace();
    const { order: placed } = await t.client.placeOrder(
      {
        idempotencyKey: `key-${randomUUID()}`,
        items: [{ productId: mug.id, quantity: 3 }],
        paymentToken: "tok_test_visa",
      },
      { headers: { ...alice.auth.headers, traceparent: trace.traceparent } },
    );
    const { order } = await t.client.getOrder({ id: placed!.id }, alice.auth);
    expect(order).toEqual(placed);
    expect(order?.traceId).toBe(trace.traceId);
    expect(order?.items).toHaveLength(1);
  });

  it("answers not_found to anyone else, exactly as for an order that does not exist", async () => {
    const order = await place(alice);
    const foreign = await rpcError(t.client.getOrder({ id: order.id }, bob.auth));
    const missingId = randomUUID();
    const missing = await rpcError(t.client.getOrder({ id: missingId }, bob.auth));
    expect(foreign.code).toBe(Code.NotFound);
    expect(missing.code).toBe(Code.NotFound);
    expect(foreign.rawMessage.replace(order.id, "ID")).toBe(
      missing.rawMessage.replace(missingId, "ID"),
    );
  });

  it("shows an admin anyone's order", async () => {
    const order = await place(bob);
    expect((await t.client.getOrder({ id: order.id }, admin.auth)).order?.userId).toBe(bob.id);
  });

  it("needs a token and a UUID", async () => {
    expect((await rpcError(t.client.getOrder({ id: randomUUID() }))).code).toBe(
      Code.Unauthenticated,
    );
    const error = await rpcError(t.client.getOrder({ id: "order-1" }, alice.auth));
    expect(error.code).toBe(Code.InvalidArgument);
    expect(error.rawMessage).toMatch(/id/);
  });
});

describe("ListOrders", () => {
  it("lists only the caller's own orders, newest first, across pages", async () => {
    const carol = await newUser(t.issuer);
    const placed: string[] = [];
    for (let i = 0; i < 7; i++) placed.push((await place(carol)).id);
    await place(bob);
    const { ids, pages, created } = await walk(carol, 3);
    expect(new Set(ids)).toEqual(new Set(placed));
    expect(ids).toHaveLength(7);
    expect(pages).toEqual([3, 3, 1]);
    // Newest first: creation times never increase along the walk.
    expect(created).toEqual([...created].sort((a, b) => (a < b ? 1 : a > b ? -1 : 0)));
    expect(ids[0]).toBe(placed.at(-1));
  });

  it("walks orders created in the same millisecond exactly once (ties broken by id)", async () => {
    const dave = await newUser(t.issuer);
    const placed: string[] = [];
    for (let i = 0; i < 5; i++) placed.push((await place(dave)).id);
    await t.service.database.db
      .update(orders)
      .set({ createdAt: new Date("2025-01-01T00:00:00.123Z") })
      .where(inArray(orders.id, placed));
    const { ids, pages } = await walk(dave, 2);
    expect(pages).toEqual([2, 2, 1]);
    expect(ids).toEqual([...placed].sort().reverse());
  });

  it("shows an admin everyone's orders", async () => {
    const mine = await place(alice);
    const theirs = await place(bob);
    const { ids } = await walk(admin, 100);
    expect(ids).toEqual(expect.arrayContaining([mine.id, theirs.id]));
    expect(ids).toHaveLength(await t.service.database.db.$count(orders));
    const { ids: alices } = await walk(alice, 100);
    expect(alices).toContain(mine.id);
    expect(alices).not.toContain(theirs.id);
  });

  it("uses 20 for a page size of 0 and refuses more than 100", async () => {
    const erin = await newUser(t.issuer);
    for (let i = 0; i < 21; i++) await place(erin);
    const page = await t.client.listOrders({}, erin.auth);
    expect(page.orders).toHaveLength(20);
    expect(page.nextPageToken).not.toBe("");
    const rest = await t.client.listOrders({ pageToken: page.nextPageToken }, erin.auth);
    expect(rest.orders).toHaveLength(1);
    expect(rest.nextPageToken).toBe("");
    const error = await rpcError(t.client.listOrders({ pageSize: 101 }, erin.auth));
    expect(error.code).toBe(Code.InvalidArgument);
    expect(error.rawMessage).toMatch(/page_size/);
  });

  it("refuses a page token from another user's listing, or one it never issued", async () => {
    await place(alice);
    await place(alice);
    const { nextPageToken } = await t.client.listOrders({ pageSize: 1 }, alice.auth);
    expect(nextPageToken).not.toBe("");
    const foreign = await rpcError(
      t.client.listOrders({ pageSize: 1, pageToken: nextPageToken }, bob.auth),
    );
    expect(foreign.code).toBe(Code.InvalidArgument);
    expect(foreign.rawMessage).toMatch(/page_token/);
    const asAdmin = await rpcError(
      t.client.listOrders({ pageSize: 1, pageToken: nextPageToken }, admin.auth),
    );
    expect(asAdmin.code).toBe(Code.InvalidArgument);
    const forged = await rpcError(
      t.client.listOrders({ pageToken: "bm90IGEgdG9rZW4" }, alice.auth),
    );
    expect(forged.code).toBe(Code.InvalidArgument);
  });

  it("shows each order's status, items and timeline in the listing", async () => {
    const frank = await newUser(t.issuer);
    const order = await place(frank, 4);
    await t.service.database.db
      .update(orders)
      .set({ status: "CANCELLED", cancelReason: "test" })
      .where(eq(orders.id, order.id));
    const [listed] = (await t.client.listOrders({}, frank.auth)).orders;
    expect(listed).toMatchObject({
      id: order.id,
      status: OrderStatus.CANCELLED,
      cancelReason: "test",
      items: [{ productId: mug.id, quantity: 4 }],
      timeline: [{ step: "order placed" }],
    });
  });
});

describe("other protocols on the same port", () => {
  it("places and reads an order over gRPC (HTTP/2)", async () => {
    const grpc = createClient(OrderService, createGrpcTransport({ baseUrl: t.service.url }));
    const { order } = await grpc.placeOrder(
      {
        idempotencyKey: `key-${randomUUID()}`,
        items: [{ productId: mug.id, quantity: 2 }],
        paymentToken: "tok_test_visa",
      },
      alice.auth,
    );
    expect(order?.status).toBe(OrderStatus.PENDING);
    expect((await grpc.getOrder({ id: order!.id }, alice.auth)).order?.id).toBe(order!.id);
    expect((await rpcError(grpc.getOrder({ id: order!.id }, bob.auth))).code).toBe(Code.NotFound);
  });

  it("lists orders over gRPC-Web (HTTP/1.1)", async () => {
    const grpcWeb = createClient(
      OrderService,
      createGrpcWebTransport({ baseUrl: t.service.url, httpVersion: "1.1" }),
    );
    const order = await place(bob);
    const { orders: listed } = await grpcWeb.listOrders({ pageSize: 1 }, bob.auth);
    expect(listed.map((o) => o.id)).toEqual([order.id]);
    expect((await rpcError(grpcWeb.listOrders({}))).code).toBe(Code.Unauthenticated);
  });
});
