// The pieces of the fault run (faults.test.ts): the shop started for it, a bounded load of
// customers' orders through the ingress, and waits on what a fault leaves behind.

import { randomBytes, randomUUID } from "node:crypto";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AuthService } from "@thinmesh/contracts/shop/auth/v1/auth_pb.js";
import { CatalogService } from "@thinmesh/contracts/shop/catalog/v1/catalog_pb.js";
import {
  type Order,
  OrderService,
  OrderStatus,
} from "@thinmesh/contracts/shop/order/v1/order_pb.js";
import type { ShopDatabases } from "../../mesh/local/src/invariants.js";
import {
  devAdmin,
  dropShopDatabases,
  type LocalShop,
  startLocalShop,
  type WorkloadName,
} from "../../mesh/local/src/shop.js";
import type { AccessRecord } from "../../mesh/local/src/sidecar/telemetry.js";
import { repoRoot } from "./processes.js";

export interface FaultShopOptions {
  /** A Postgres server URL (one database per service on it); PGlite in dataDir without. */
  databaseUrl: string | undefined;
  dataDir: string;
  /** Every log line of every workload, as the supervisor reads it. */
  line(name: string, line: string): void;
  /** Every access record of the ingress and the sidecars. */
  onRecord?(record: AccessRecord): void;
}

export interface FaultShop {
  shop: LocalShop;
  /** Where the invariant checker reads the services' databases. */
  databases: ShopDatabases;
  /** Drops the services' databases on a Postgres server (none with PGlite). */
  dropDatabases(): Promise<void>;
}

/**
 * The shop as `npm start` runs it, with the services' own defaults (relay timing included):
 * the fault run measures what users get. The one place this test passes startLocalShop
 * options, should they change.
 */
export async function startFaultShop(options: FaultShopOptions): Promise<FaultShop> {
  const prefix = `thinmesh_faults_${randomBytes(3).toString("hex")}`;
  const shop = await startLocalShop({
    root: repoRoot,
    ingressPort: 0,
    statsPort: 0,
    databaseUrl: options.databaseUrl,
    databasePrefix: prefix,
    dataDir: options.dataDir,
    logLevel: "info",
    events: {
      line: options.line,
      event: (name, message, fields) =>
        options.line(name, JSON.stringify({ supervisor: message, ...fields })),
    },
    onRecord: options.onRecord ?? (() => {}),
  });
  const { databaseUrl } = options;
  try {
    await shop.ready(120_000);
  } catch (error) {
    await shop.stop();
    throw error;
  }
  return {
    shop,
    databases: shop.databaseUrls ?? { pgliteDataDir: options.dataDir },
    async dropDatabases() {
      if (databaseUrl) await dropShopDatabases(databaseUrl, prefix);
    },
  };
}

/** Resolves when the workload answers /readyz; false after timeoutMs. */
export async function waitReady(shop: LocalShop, name: WorkloadName, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if ((await shop.readiness(name)) === undefined) return true;
    await sleep(100);
  }
  return false;
}

/** Resolves when the supervisor has started a new process in place of `oldPid`. */
export async function waitRestarted(shop: LocalShop, name: WorkloadName, oldPid: number) {
  const workload = shop.processesOf(name)[0]!;
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    const pid = workload.pid();
    if (pid !== undefined && pid !== oldPid) return;
    await sleep(50);
  }
  throw new Error(`${name} was not restarted within 60 s after pid ${oldPid} was killed`);
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A registered customer's access token, and the products the load orders. */
export interface Customer {
  token: string;
  productIds: string[];
}

const transportFor = (shop: LocalShop) =>
  createConnectTransport({ baseUrl: shop.ingressUrl, httpVersion: "1.1" });
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

/** Registers a customer and (as the dev admin) creates products with ample stock. */
export async function newCustomer(shop: LocalShop, products = 4): Promise<Customer> {
  const transport = transportFor(shop);
  const auth = createClient(AuthService, transport);
  const admin = (await auth.login(devAdmin)).tokens!.accessToken;
  const email = `faults-${randomUUID().slice(0, 8)}@example.com`;
  await auth.register({ email, password: "correct horse battery" });
  const token = (await auth.login({ email, password: "correct horse battery" })).tokens!
    .accessToken;
  const catalog = createClient(CatalogService, transport);
  const productIds: string[] = [];
  for (let i = 0; i < products; i++) {
    const sku = `FAULT-${randomBytes(3).toString("hex").toUpperCase()}`;
    const { product } = await catalog.createProduct(
      {
        sku,
        name: `Fault run ${sku}`,
        price: { currencyCode: "EUR", amountMinor: BigInt(500 + 250 * i) },
        initialStock: 100_000,
      },
      { headers: bearer(admin) },
    );
    productIds.push(product!.id);
  }
  return { token, productIds };
}

/** What a customer would retry with the same idempotency key: the call may not have happened. */
const retriable = new Set([Code.Unavailable, Code.DeadlineExceeded, Code.Unknown, Code.Aborted]);

export interface PlacedOrder {
  /** The phase (fault) during which it was placed. */
  phase: string;
  paymentToken: string;
  /** The order id, once PlaceOrder answered OK. */
  id?: string;
  /** Non-OK answers by Connect code name, retries included. */
  errors: Record<string, number>;
  /** The first message per error code, to tell a mesh's 503 from a service's own answer. */
  messages: Record<string, string>;
  /** Set when the customer gave up: a non-retriable answer, or retries ran out. */
  failed?: string;
}

/**
 * Customers placing orders at `perSecond` through the ingress, each like a real client: a
 * fresh idempotency key per order, the same key again after an answer that may not have
 * been final (unavailable, deadline, a broken connection), giving up after `giveUpMs` or on
 * any other error. A few orders pay with a declined card (the compensation path) and a few
 * with tok_test_flaky (the provider fails twice, then captures).
 */
export function startOrderLoad(
  shop: LocalShop,
  customer: Customer,
  // Giving up only long after any fault here has healed: a restart on a loaded machine (PGlite
  // opening its data directory) took over a minute, and waiting out a fault is not a failure.
  { perSecond = 8, callTimeoutMs = 5_000, giveUpMs = 120_000 } = {},
) {
  const orders = createClient(OrderService, transportFor(shop));
  const placed: PlacedOrder[] = [];
  const inFlight = new Set<Promise<void>>();
  let phase: string | undefined;
  let timer: NodeJS.Timeout | undefined;
  let n = 0;

  const placeOne = async (order: PlacedOrder) => {
    // A retry sends the very same request: a different one under the same key is refused.
    const request = {
      idempotencyKey: randomUUID(),
      items: [
        { productId: customer.productIds[n % customer.productIds.length]!, quantity: 1 + (n % 3) },
      ],
      paymentToken: order.paymentToken,
    };
    const deadline = Date.now() + giveUpMs;
    for (;;) {
      try {
        const { order: answer } = await orders.placeOrder(request, {
          headers: bearer(customer.token),
          timeoutMs: callTimeoutMs,
        });
        order.id = answer!.id;
        return;
      } catch (error) {
        const code = Code[ConnectError.from(error).code];
        order.errors[code] = (order.errors[code] ?? 0) + 1;
        order.messages[code] ??= ConnectError.from(error).rawMessage.slice(0, 200);
        if (!retriable.has(ConnectError.from(error).code)) {
          order.failed = `${code}: ${ConnectError.from(error).rawMessage}`;
          return;
        }
        if (Date.now() > deadline) {
          order.failed = `still ${code} after ${giveUpMs / 1000} s of retries`;
          return;
        }
        await sleep(250);
      }
    }
  };

  const tick = () => {
    if (!phase) return;
    n++;
    const paymentToken =
      n % 10 === 3 ? "tok_test_declined" : n % 10 === 7 ? "tok_test_flaky" : "tok_test_visa";
    const order: PlacedOrder = { phase, paymentToken, errors: {}, messages: {} };
    placed.push(order);
    const running = placeOne(order).finally(() => inFlight.delete(running));
    inFlight.add(running);
  };

  return {
    placed,
    /** Places orders for this phase until pause(). */
    run(name: string) {
      phase = name;
      clearInterval(timer);
      timer = setInterval(tick, 1000 / perSecond);
    },
    /** Stops placing new orders; resolves once every order placed has its final answer. */
    async pause() {
      phase = undefined;
      clearInterval(timer);
      while (inFlight.size) await Promise.all(inFlight);
    },
    /** Ids of the orders answered OK (all phases, or one). */
    answeredOk(only?: string) {
      return placed.filter((o) => o.id && (!only || o.phase === only)).map((o) => o.id!);
    },
  };
}
export type OrderLoad = ReturnType<typeof startOrderLoad>;

/**
 * Polls the customer's orders (ListOrders through the ingress, as the customer would see
 * them) until every one of `ids` is CONFIRMED or CANCELLED; resolves to the time that
 * happened, or undefined after timeoutMs. Calls failing meanwhile (a service still down)
 * are polled again.
 */
export async function whenAllTerminal(
  shop: LocalShop,
  customer: Customer,
  ids: readonly string[],
  timeoutMs: number,
): Promise<{ at?: number; open: string[]; slowest?: Order }> {
  const orders = createClient(OrderService, transportFor(shop));
  const open = new Set(ids);
  // When each became terminal, by its own update_time: polling adds its own delay.
  let slowest: Order | undefined;
  const endOf = (order: Order) => (order.updateTime ? timestampMs(order.updateTime) : 0);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      let pageToken = "";
      const unseen = new Set(open);
      do {
        const page = await orders.listOrders(
          { pageSize: 100, pageToken },
          { headers: bearer(customer.token), timeoutMs: 5_000 },
        );
        for (const order of page.orders) {
          unseen.delete(order.id);
          if (
            open.has(order.id) &&
            (order.status === OrderStatus.CONFIRMED || order.status === OrderStatus.CANCELLED)
          ) {
            open.delete(order.id);
            if (!slowest || endOf(order) > endOf(slowest)) slowest = order;
          }
        }
        pageToken = page.nextPageToken;
      } while (pageToken && unseen.size > 0);
    } catch {
      // Down or restarting: ask again.
    }
    if (open.size === 0) {
      return { at: slowest ? endOf(slowest) : Date.now(), open: [], ...(slowest && { slowest }) };
    }
    if (Date.now() > deadline) return { open: [...open] };
    await sleep(200);
  }
}
