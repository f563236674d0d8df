// The order saga under load, as bench/orders.js and bench/sidecars.js run it: a bench shop
// (./shop.js) with the settings they share, its products and customers, and phases of
// orders placed by the load generator (./load.js), each measured from placing until the
// saga settled.
import { randomBytes, randomUUID } from "node:crypto";
import { connectPostgres } from "@thinmesh/platform";
import { settle } from "../mesh/local/dist/invariants.js";
import { devAdmin } from "../mesh/local/dist/shop.js";
import { get, rpc } from "./http.js";
import {
  appBases,
  cpuSample,
  cpuSince,
  noSubscriptionsFile,
  startBenchShop,
  switchesSample,
} from "./shop.js";

/**
 * A bench shop for the saga: the relays poll every 200 ms; `placeOnly` leaves the saga out
 * (the order service publishes OrderPlaced to nobody).
 */
export function startSagaShop(
  name,
  { placeOnly = false, bypassSidecars = false, onRecord = () => {} } = {},
) {
  return startBenchShop(
    name,
    (dataDir) => ({
      catalog: { OUTBOX_POLL_MS: "200" },
      order: {
        OUTBOX_POLL_MS: "200",
        ...(placeOnly && { EVENT_SUBSCRIPTIONS_FILE: noSubscriptionsFile(dataDir) }),
      },
      payment: { OUTBOX_POLL_MS: "200" },
    }),
    { bypassSidecars, onRecord },
  );
}

/**
 * Waits for the shop, then creates through its ingress what the customers buy (8 products
 * with stock to spare) and `customers` registered users with their access tokens.
 */
export async function prepareCustomers(shop, customers) {
  await shop.ready(90_000);
  const ingress = shop.ingressUrl;
  const admin = (await rpc(ingress, "shop.auth.v1.AuthService/Login", devAdmin)).tokens.accessToken;
  const products = [];
  for (let i = 0; i < 8; i++) {
    const { product } = await rpc(
      ingress,
      "shop.catalog.v1.CatalogService/CreateProduct",
      {
        sku: `BENCH-${i}-${randomBytes(2).toString("hex").toUpperCase()}`,
        name: `Bench ${i}`,
        price: { currencyCode: "EUR", amountMinor: "990" },
        initialStock: 1_000_000,
      },
      admin,
    );
    products.push(product.id);
  }
  const users = [];
  for (let i = 0; i < customers; i++) {
    const email = `bench-${randomUUID().slice(0, 8)}@example.com`;
    const credentials = { email, password: "benchmark password" };
    await rpc(ingress, "shop.auth.v1.AuthService/Register", credentials);
    users.push(
      (await rpc(ingress, "shop.auth.v1.AuthService/Login", credentials)).tokens.accessToken,
    );
  }
  return { products, users };
}

export const percentile = (sorted, p) =>
  sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];

/**
 * One phase: the load generator places orders at `base` (see ./load.js), then, unless
 * placeOnly, the saga settles. `others` are processes to count apart from the rest of the
 * machine (name → pid or pids). Returns what it measured: orders placed and failed,
 * confirmed/s, PlaceOrder and time-to-CONFIRMED percentiles, CPU and context switches per
 * order by process, each process's share of a core while placing, events per Deliver call.
 */
export async function runPhase(
  { bench, load, customers, concurrency, placeOnly = false, others = {} },
  { label, base, rate, seconds, orders },
) {
  const { shop, databaseUrls: urls } = bench;
  const counted = { client: load.pid, ...others };
  const sinceMs = Date.now();
  const cpuBefore = cpuSample(shop, counted);
  const switchesBefore = switchesSample(shop, counted);
  const batchesBefore = await relayBatches(shop);
  const placed = await load.place({
    base,
    rate,
    seconds,
    orders,
    concurrency,
    products: customers.products,
    users: customers.users,
  });
  for (const message of placed.errors) console.error(`${label}: ${message}`);
  const cpuPlacing = cpuSince(shop, cpuBefore, counted);
  if (!placeOnly) await settle(urls, 120_000);
  const cpu = cpuSince(shop, cpuBefore, counted);
  const switchesAfter = switchesSample(shop, counted);
  const batches = await relayBatches(shop);
  const latencies = placed.latencies.sort((a, b) => a - b);
  // Without the saga an order is done once placed.
  const { done, perSecond, toConfirmed } = placeOnly
    ? {
        done: latencies.length,
        perSecond: latencies.length / placed.placingSeconds,
        toConfirmed: [],
      }
    : await confirmedSince(urls, sinceMs);
  return {
    label,
    rate,
    placed: latencies.length,
    failures: placed.failures,
    placingSeconds: placed.placingSeconds,
    /** Orders done (confirmed; placed, with placeOnly), and in how many seconds. */
    done,
    doneSeconds: perSecond > 0 ? done / perSecond : 0,
    confirmedPerSecond: perSecond,
    /** Every PlaceOrder latency (ms), sorted: phases can be pooled. */
    latencies,
    placeP50: percentile(latencies, 50),
    placeP99: percentile(latencies, 99),
    confirmP50: percentile(toConfirmed, 50),
    confirmP99: percentile(toConfirmed, 99),
    eventsPerCall: Object.fromEntries(
      Object.entries(batches).map(([lane, { sum, count }]) => {
        const before = batchesBefore[lane] ?? { sum: 0, count: 0 };
        return [lane, (sum - before.sum) / Math.max(1, count - before.count)];
      }),
    ),
    switchesPerOrder: Object.fromEntries(
      Object.entries(switchesAfter).map(([name, n]) => [
        name,
        (n - (switchesBefore[name] ?? 0)) / Math.max(1, done),
      ]),
    ),
    cpuPerOrder: Object.fromEntries(
      Object.entries(cpu).map(([name, ms]) => [name, ms / Math.max(1, done)]),
    ),
    /** Each process's CPU while placing, as a share of one core (1 = a core kept busy). */
    coresPlacing: Object.fromEntries(
      Object.entries(cpuPlacing).map(([name, ms]) => [name, ms / 1000 / placed.placingSeconds]),
    ),
  };
}

/** The orders confirmed since sinceMs: how many, how many a second, each one's time to CONFIRMED. */
export async function confirmedSince(urls, sinceMs) {
  const sql = connectPostgres(urls.order, { max: 1, onnotice: () => {} });
  const rows = await sql`
    select extract(epoch from (updated_at - created_at)) * 1000 as ms, updated_at
      from orders where status = 'CONFIRMED' and created_at >= ${new Date(sinceMs)}`;
  await sql.end();
  const lastConfirmed = Math.max(...rows.map((r) => r.updated_at.getTime()));
  return {
    done: rows.length,
    perSecond: rows.length / ((lastConfirmed - sinceMs) / 1000),
    toConfirmed: rows.map((r) => Number(r.ms)).sort((a, b) => a - b),
  };
}

/**
 * Per relay lane ("order→catalog"): events sent and calls made so far by every instance of
 * the producer, from each app's /metrics (which only the app serves, not the mesh).
 */
export async function relayBatches(shop) {
  const lanes = {};
  for (const { app, base } of await appBases(shop)) {
    const text = await get(base, "metrics");
    for (const [, part, subscriber, value] of text.matchAll(
      /^outbox_delivery_batch_events_(sum|count)\{[^}]*subscriber="([^"]+)"[^}]*\} (\S+)$/gm,
    )) {
      const lane = `${app}→${subscriber}`;
      lanes[lane] ??= { sum: 0, count: 0 };
      lanes[lane][part] += Number(value);
    }
  }
  return lanes;
}

/** "50/s", or "closed loop" for rate 0. */
export function rateName(rate) {
  return rate > 0 ? `${rate}/s` : "closed loop";
}

/** `name 1.2, other 3.4`: one figure per process, as the reports print them. */
export function byProcess(figures, digits = 1) {
  return Object.entries(figures)
    .map(([name, n]) => `${name} ${n.toFixed(digits)}`)
    .join(", ");
}
