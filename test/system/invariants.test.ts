// The invariant checker against databases built by hand: the services' migrations applied,
// the rows of a settled saga inserted directly, then one row per order corrupted. Shows that
// each check reports what it is for, and that a clean state gives no violation. Runs on the
// test Postgres, or (THINMESH_TEST_DB=pglite) on PGlite data directories as `npm start` has.
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Database, openDatabase } from "@thinmesh/platform";
import { createTestDatabase, type TestDatabase } from "@thinmesh/platform/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  checkInvariants,
  type InvariantReport,
  noStockYet,
  type ShopDatabases,
} from "../../mesh/local/src/invariants.js";
import { repoRoot } from "./processes.js";

const services = ["catalog", "order", "payment"] as const;
type Service = (typeof services)[number];
const eventType = (name: string) => `shop.events.v1.${name}`;

let where: ShopDatabases;
let testDatabases: TestDatabase[] = [];
let pgliteDir: string | undefined;

/** Opens one service's database (migrated), runs the statements, closes it (PGlite: one opener). */
async function onDatabase(service: Service, statements: string[]) {
  const db: Database<Record<string, never>> = await openDatabase({
    ...("pgliteDataDir" in where
      ? { dataDir: join(where.pgliteDataDir, service) }
      : { url: where[service] }),
    schema: {},
    migrationsFolder: join(repoRoot, "services", service, "drizzle"),
  });
  try {
    await db.migrate();
    for (const statement of statements) await db.db.execute(statement);
  } finally {
    await db.close();
  }
}

interface SagaRows {
  orderId: string;
  productId: string;
  events: Record<string, string>;
}

/**
 * The rows a settled saga leaves for one order: CONFIRMED (captured, ledger, stock committed)
 * or CANCELLED by a declined payment (stock released); every event delivered and in its
 * consumer's inbox.
 */
function sagaRows(outcome: "CONFIRMED" | "CANCELLED", quantity = 2, unitMinor = 1000) {
  const orderId = randomUUID();
  const productId = randomUUID();
  const paymentId = randomUUID();
  const total = quantity * unitMinor;
  const confirmed = outcome === "CONFIRMED";
  const statements: Record<Service, string[]> = { catalog: [], order: [], payment: [] };
  const events: Record<string, string> = {};
  // producer → event → consumer
  const flow: [Service, string, Service][] = [
    ["order", "OrderPlaced", "catalog"],
    ["catalog", "StockReserved", "order"],
    ["order", "PaymentRequested", "payment"],
    ["payment", confirmed ? "PaymentCaptured" : "PaymentDeclined", "order"],
    ["order", confirmed ? "OrderConfirmed" : "OrderCancelled", "catalog"],
  ];
  for (const [producer, name, consumer] of flow) {
    const id = randomUUID();
    events[name] = id;
    statements[producer].push(
      `insert into outbox_events (id, type, subject, envelope) values ('${id}', '${eventType(name)}', '${orderId}', '\\x00')`,
      `insert into outbox_deliveries (event_id, subscriber, status, attempts, delivered_at) values ('${id}', '${consumer}', 'delivered', 1, now())`,
    );
    statements[consumer].push(
      `insert into inbox (event_id, type, source) values ('${id}', '${eventType(name)}', '${producer}')`,
    );
  }
  statements.order.unshift(
    `insert into orders (id, user_id, idempotency_key, request_fingerprint, status, currency, total_minor, payment_token, trace_id)
     values ('${orderId}', 'user-1', '${randomUUID()}', 'fp', '${outcome}', 'EUR', ${total}, 'tok_test_visa', '${"0".repeat(32)}')`,
  );
  statements.catalog.unshift(
    `insert into products (id, sku, name, description, price_minor, currency, stock_available, initial_stock)
     values ('${productId}', 'SKU-${productId.slice(0, 8)}', 'Checked', '', ${unitMinor}, 'EUR', ${10 - (confirmed ? quantity : 0)}, 10)`,
    `insert into reservations (order_id, status) values ('${orderId}', '${confirmed ? "committed" : "released"}')`,
    `insert into reservation_lines (order_id, product_id, quantity) values ('${orderId}', '${productId}', ${quantity})`,
  );
  statements.payment.unshift(
    confirmed
      ? `insert into payments (id, order_id, user_id, status, amount_minor, currency, provider_reference)
         values ('${paymentId}', '${orderId}', 'user-1', 'CAPTURED', ${total}, 'EUR', 'sim_x')`
      : `insert into payments (id, order_id, user_id, status, amount_minor, currency, decline_reason)
         values ('${paymentId}', '${orderId}', 'user-1', 'DECLINED', ${total}, 'EUR', 'card declined')`,
    ...(confirmed
      ? [
          `insert into ledger_entries (payment_id, position, kind, account, direction, amount_minor, currency)
           values ('${paymentId}', 0, 'capture', 'customer:user-1', 'debit', ${total}, 'EUR'),
                  ('${paymentId}', 1, 'capture', 'merchant', 'credit', ${total}, 'EUR')`,
        ]
      : []),
  );
  return { rows: { orderId, productId, events } satisfies SagaRows, statements, paymentId };
}

const orders = {
  noLedger: sagaRows("CONFIRMED"),
  unbalanced: sagaRows("CONFIRMED"),
  wrongTotal: sagaRows("CONFIRMED"),
  released: sagaRows("CONFIRMED"),
  committed: sagaRows("CANCELLED"),
  undeliverable: sagaRows("CONFIRMED"),
  notInInbox: sagaRows("CONFIRMED"),
  fine: sagaRows("CANCELLED"),
};
const answeredOk = Object.values(orders).map((o) => o.rows.orderId);
const lostOrder = randomUUID();
let clean: InvariantReport;
let broken: InvariantReport;

describe("the invariant checker", () => {
  beforeAll(async () => {
    const first = await createTestDatabase("invariants_catalog");
    if (first.kind === "postgres") {
      testDatabases = [first];
      for (const service of ["order", "payment"])
        testDatabases.push(await createTestDatabase(`invariants_${service}`));
      const [catalog, order, payment] = testDatabases.map((d) => d.url!);
      where = { catalog: catalog!, order: order!, payment: payment! };
    } else {
      pgliteDir = mkdtempSync(join(tmpdir(), "thinmesh-invariants-"));
      where = { pgliteDataDir: pgliteDir };
    }
    for (const service of services)
      await onDatabase(
        service,
        Object.values(orders).flatMap((o) => o.statements[service]),
      );
    clean = await checkInvariants(where, noStockYet(), { answeredOk });

    const { noLedger, unbalanced, wrongTotal, released, committed, undeliverable, notInInbox } =
      orders;
    await onDatabase("payment", [
      `delete from ledger_entries where payment_id = '${noLedger.paymentId}'`,
      `update ledger_entries set amount_minor = amount_minor - 1 where payment_id = '${unbalanced.paymentId}' and direction = 'credit'`,
      // Balanced, but not the captured amount.
      `update ledger_entries set amount_minor = amount_minor + 5 where payment_id = '${wrongTotal.paymentId}'`,
    ]);
    await onDatabase("catalog", [
      `update reservations set status = 'released' where order_id = '${released.rows.orderId}'`,
      `update reservations set status = 'committed' where order_id = '${committed.rows.orderId}'`,
      `delete from inbox where event_id = '${notInInbox.rows.events.OrderConfirmed}'`,
    ]);
    await onDatabase("order", [
      `delete from outbox_deliveries where event_id = '${undeliverable.rows.events.OrderPlaced}'`,
    ]);
    broken = await checkInvariants(where, noStockYet(), {
      answeredOk: [...answeredOk, lostOrder],
    });
  }, 120_000);

  afterAll(async () => {
    for (const database of testDatabases) await database.drop();
    if (pgliteDir) rmSync(pgliteDir, { recursive: true, force: true });
  });

  it("reports nothing on a settled saga", () => {
    expect(clean.violations).toEqual([]);
    expect(clean.orders).toEqual({ total: 8, confirmed: 6, cancelled: 2 });
    expect(clean.capturedMinor).toBe(12_000n);
  });

  const reports = (pattern: RegExp) => {
    expect(clean.violations.filter((v) => pattern.test(v))).toEqual([]);
    expect(broken.violations).toEqual(expect.arrayContaining([expect.stringMatching(pattern)]));
  };

  it("reports a captured payment without ledger entries", () => {
    reports(new RegExp(`captured payment ${orders.noLedger.paymentId} .*has no ledger entries`));
  });

  it("reports ledger entries that do not balance", () => {
    reports(new RegExp(`ledger entries of payment ${orders.unbalanced.paymentId} do not balance`));
  });

  it("reports balanced ledger entries that do not sum to the captured amount", () => {
    reports(
      new RegExp(
        `ledger of captured payment ${orders.wrongTotal.paymentId} .*amount 2000\\) records debits 2005, credits 2005`,
      ),
    );
  });

  it("reports a reservation released for a confirmed order", () => {
    reports(new RegExp(`reservation released for confirmed order ${orders.released.rows.orderId}`));
  });

  it("reports a reservation committed for a cancelled order", () => {
    reports(
      new RegExp(`reservation committed for cancelled order ${orders.committed.rows.orderId}`),
    );
  });

  it("reports an outbox event without a delivery row for its subscriber", () => {
    reports(
      new RegExp(
        `order has 1 events without a delivery row .*OrderPlaced ${orders.undeliverable.rows.events.OrderPlaced} → catalog`,
      ),
    );
  });

  it("reports a delivered event missing from the consumer's inbox", () => {
    reports(
      new RegExp(
        `order has 1 delivered events missing from the consumer's inbox: ${orders.notInInbox.rows.events.OrderConfirmed} → catalog`,
      ),
    );
  });

  it("reports an order answered OK to the client that is missing", () => {
    reports(new RegExp(`1 orders answered OK to the client are missing: ${lostOrder}`));
  });
});
