// The saga's invariants, checked against the four services' databases (design.md section 3):
// after any fault heals, every order is CONFIRMED or CANCELLED, no order is charged twice,
// captured money equals the total of confirmed orders and is in the ledger, reserved stock
// returns on cancel and stays sold on confirm, no committed event is lost (each has a delivery
// per subscriber, and each delivered one is in its consumer's inbox), and no order a client was
// told was placed is missing. Used by the end-to-end tests (test/system) and bench/orders.js.
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  type AppDatabase,
  type Database,
  loadSubscriptions,
  openDatabase,
  rowsOf,
  type Subscriptions,
} from "@thinmesh/platform";

export type DatabaseUrls = Record<"catalog" | "order" | "payment" | "auth", string>;

/** The services whose databases hold the saga (auth has no part in it). */
const eventServices = ["catalog", "order", "payment"] as const;
type EventService = (typeof eventServices)[number];

/**
 * Where the services' databases are: a postgres:// URL per service, or (embedded PGlite) the
 * shop's dataDir with one data directory per service. Only one process may open a PGlite
 * directory: read those only while the shop is stopped.
 */
export type ShopDatabases = Pick<DatabaseUrls, EventService> | { pgliteDataDir: string };

export interface StockSnapshot {
  /** product id → available + committed (reserved stock is accounted for separately). */
  byProduct: Map<
    string,
    { available: number; reserved: number; committed: number; initial: number }
  >;
}

/** The stock before a run in which only products created during the run are ordered. */
export const noStockYet = (): StockSnapshot => ({ byProduct: new Map() });

export interface InvariantOptions {
  /**
   * Ids of the orders PlaceOrder answered OK for (the load generator's record): each must
   * exist. Without it, lost orders that were never written cannot be noticed.
   */
  answeredOk?: Iterable<string>;
  /** Event type → consumers; config/subscriptions.yaml by default. */
  subscriptions?: Subscriptions;
}

export interface InvariantReport {
  orders: { total: number; confirmed: number; cancelled: number };
  capturedMinor: bigint;
  confirmedTotalMinor: bigint;
  violations: string[];
}

// The same path from src/ and from dist/.
const defaultSubscriptionsFile = fileURLToPath(
  new URL("../../../config/subscriptions.yaml", import.meta.url),
);
// biome-ignore lint/suspicious/noExplicitAny: reads any service's tables with raw SQL
type Reader = AppDatabase<any>;

async function openReaders(where: ShopDatabases): Promise<{
  readers: Record<EventService, Reader>;
  close(): Promise<void>;
}> {
  const opened: Database<Record<string, never>>[] = [];
  try {
    for (const service of eventServices) {
      opened.push(
        await openDatabase({
          ...("pgliteDataDir" in where
            ? { dataDir: join(where.pgliteDataDir, service) }
            : { url: where[service] }),
          poolSize: 1,
          schema: {},
          // Only read, never migrated.
          migrationsFolder: "",
        }),
      );
    }
  } catch (error) {
    await Promise.all(opened.map((d) => d.close()));
    throw error;
  }
  return {
    readers: Object.fromEntries(eventServices.map((s, i) => [s, opened[i]!.db])) as Record<
      EventService,
      Reader
    >,
    close: async () => {
      await Promise.all(opened.map((d) => d.close()));
    },
  };
}

const rows = async <T>(db: Reader, query: string) => rowsOf<T>(await db.execute(query));

const stockQuery = `
  select p.id::text as id, p.stock_available as available, p.initial_stock as initial,
         coalesce(sum(l.quantity) filter (where r.status = 'reserved'), 0)::int as reserved,
         coalesce(sum(l.quantity) filter (where r.status = 'committed'), 0)::int as committed
    from products p
    left join reservation_lines l on l.product_id::text = p.id::text
    left join reservations r on r.order_id = l.order_id
   group by p.id`;

type StockRow = {
  id: string;
  available: number;
  reserved: number;
  committed: number;
  initial: number;
};

/** Stock per product, to compare before and after a run. */
export async function snapshotStock(where: ShopDatabases): Promise<StockSnapshot> {
  const { readers, close } = await openReaders(where);
  try {
    return await stockOf(readers.catalog);
  } finally {
    await close();
  }
}

async function stockOf(catalog: Reader): Promise<StockSnapshot> {
  const found = await rows<StockRow>(catalog, stockQuery);
  return { byProduct: new Map(found.map((r) => [r.id, r])) };
}

/** The first few of a list, for a violation message that stays readable. */
const some = (items: string[]) =>
  items.slice(0, 5).join(", ") + (items.length > 5 ? `, … (${items.length} in all)` : "");

/**
 * Checks every invariant; `before` is the stock snapshot taken before the orders of the run
 * were placed (stock is conserved: what left "available" was sold, nothing vanished). Stock
 * set by an admin during the run (SetStock) would count as a violation: don't. Inbox records
 * and delivered events are pruned after their retention (EVENT_RETENTION): check runs shorter
 * than that.
 */
export async function checkInvariants(
  where: ShopDatabases,
  before: StockSnapshot,
  options: InvariantOptions = {},
): Promise<InvariantReport> {
  const violations: string[] = [];
  const subscriptions = options.subscriptions ?? loadSubscriptions(defaultSubscriptionsFile);
  const { readers, close } = await openReaders(where);
  try {
    const orders = await rows<{ id: string; status: string; total: string }>(
      readers.order,
      "select id::text as id, status, total_minor::text as total from orders",
    );
    const orderStatus = new Map(orders.map((o) => [o.id, o.status]));
    const stuck = orders.filter((o) => o.status !== "CONFIRMED" && o.status !== "CANCELLED");
    if (stuck.length)
      violations.push(
        `${stuck.length} orders are not terminal: ${some(stuck.map((o) => `${o.id} ${o.status}`))}`,
      );

    const missing = [...new Set(options.answeredOk ?? [])].filter((id) => !orderStatus.has(id));
    if (missing.length)
      violations.push(
        `${missing.length} orders answered OK to the client are missing: ${some(missing)}`,
      );

    const captured = await checkPayments(readers.payment, violations);

    let confirmedTotal = 0n;
    for (const o of orders) {
      const charged = captured.get(o.id);
      if (o.status === "CONFIRMED") {
        confirmedTotal += BigInt(o.total);
        if (charged !== BigInt(o.total))
          violations.push(
            `confirmed order ${o.id} (total ${o.total}) has capture ${charged ?? "none"}`,
          );
      } else if (o.status === "CANCELLED" && charged !== undefined) {
        violations.push(`cancelled order ${o.id} was charged ${charged}`);
      }
    }
    const capturedTotal = [...captured.values()].reduce((a, b) => a + b, 0n);
    if (capturedTotal !== confirmedTotal) {
      violations.push(
        `captured money ${capturedTotal} differs from the confirmed orders' total ${confirmedTotal}`,
      );
    }

    await checkStock(readers.catalog, before, violations);
    await checkReservations(readers.catalog, orderStatus, violations);
    await checkEvents(readers, subscriptions, violations);
    return {
      orders: {
        total: orders.length,
        confirmed: orders.filter((o) => o.status === "CONFIRMED").length,
        cancelled: orders.filter((o) => o.status === "CANCELLED").length,
      },
      capturedMinor: capturedTotal,
      confirmedTotalMinor: confirmedTotal,
      violations,
    };
  } finally {
    await close();
  }
}

/**
 * Charged at most once per order, and every captured payment's money in the ledger: its debits
 * and its credits each sum to the captured amount (so they balance), the merchant credited
 * with it; a declined payment moves no money. Answers order id → captured amount.
 */
async function checkPayments(payment: Reader, violations: string[]) {
  const payments = await rows<{
    id: string;
    order_id: string;
    status: string;
    amount: string;
    debits: string;
    credits: string;
    merchant: string;
    entries: number;
  }>(
    payment,
    `select p.id::text as id, p.order_id::text as order_id, p.status,
            p.amount_minor::text as amount, count(l.position)::int as entries,
            coalesce(sum(l.amount_minor) filter (where l.direction = 'debit'), 0)::text as debits,
            coalesce(sum(l.amount_minor) filter (where l.direction = 'credit'), 0)::text as credits,
            coalesce(sum(case when l.account = 'merchant' and l.direction = 'credit' then l.amount_minor
                              when l.account = 'merchant' then -l.amount_minor end), 0)::text as merchant
       from payments p left join ledger_entries l on l.payment_id = p.id
      group by p.id`,
  );
  const captured = new Map<string, bigint>();
  for (const p of payments) {
    if (p.status !== "CAPTURED") {
      if (p.entries > 0)
        violations.push(
          `${p.status.toLowerCase()} payment ${p.id} has ${p.entries} ledger entries`,
        );
      continue;
    }
    if (captured.has(p.order_id)) violations.push(`order ${p.order_id} was charged twice`);
    captured.set(p.order_id, (captured.get(p.order_id) ?? 0n) + BigInt(p.amount));
    if (p.entries === 0) {
      violations.push(`captured payment ${p.id} (order ${p.order_id}) has no ledger entries`);
      continue;
    }
    if (p.debits !== p.credits)
      violations.push(
        `the ledger entries of payment ${p.id} do not balance (debits ${p.debits}, credits ${p.credits})`,
      );
    if (p.debits !== p.amount || p.credits !== p.amount || p.merchant !== p.amount)
      violations.push(
        `the ledger of captured payment ${p.id} (order ${p.order_id}, amount ${p.amount}) records debits ${p.debits}, credits ${p.credits}, merchant ${p.merchant}`,
      );
  }
  // Entries of no payment at all would be money from nowhere (the foreign key forbids it).
  return captured;
}

/** Nothing left reserved, and what left "available" since `before` was sold. */
async function checkStock(catalog: Reader, before: StockSnapshot, violations: string[]) {
  const after = await stockOf(catalog);
  for (const [id, now] of after.byProduct) {
    // A product created during the run started with its initial stock and nothing sold.
    const then = before.byProduct.get(id) ?? {
      available: now.initial,
      reserved: 0,
      committed: 0,
      initial: now.initial,
    };
    if (now.reserved !== 0)
      violations.push(`product ${id} still has ${now.reserved} reserved after every order ended`);
    const left = then.available + then.reserved - now.available - now.reserved;
    const sold = now.committed - then.committed;
    if (left !== sold)
      violations.push(
        `product ${id}: ${left} units left stock but ${sold} were sold (stock not conserved)`,
      );
  }
}

/**
 * A reservation ends as its order did: committed for a confirmed order (which must have one),
 * released for a cancelled one (a rejected order has none). One the order service does not
 * know is stock taken for nothing.
 */
async function checkReservations(
  catalog: Reader,
  orderStatus: ReadonlyMap<string, string>,
  violations: string[],
) {
  const reservations = await rows<{ order_id: string; status: string }>(
    catalog,
    "select order_id, status from reservations",
  );
  const byOrder = new Map(reservations.map((r) => [r.order_id.toLowerCase(), r.status]));
  for (const [orderId, status] of byOrder) {
    const order = orderStatus.get(orderId);
    if (order === undefined) violations.push(`reservation ${status} for unknown order ${orderId}`);
    else if (order === "CANCELLED" && status === "committed")
      violations.push(`reservation committed for cancelled order ${orderId}`);
    else if (order === "CONFIRMED" && status !== "committed")
      violations.push(`reservation ${status} for confirmed order ${orderId}`);
  }
  for (const [orderId, status] of orderStatus)
    if (status === "CONFIRMED" && !byOrder.has(orderId))
      violations.push(`confirmed order ${orderId} has no reservation`);
}

/**
 * No committed event lost: each has a delivery row per subscriber of its type, every delivery
 * got through (none pending or dead), and each delivered event is in its consumer's inbox.
 */
async function checkEvents(
  readers: Record<EventService, Reader>,
  subscriptions: Subscriptions,
  violations: string[],
) {
  const inboxes = new Map<string, Set<string>>();
  const inboxOf = async (consumer: string) => {
    let ids = inboxes.get(consumer);
    if (!ids) {
      const reader = readers[consumer as EventService];
      ids = reader
        ? new Set(
            (await rows<{ id: string }>(reader, "select event_id::text as id from inbox")).map(
              (r) => r.id,
            ),
          )
        : new Set();
      inboxes.set(consumer, ids);
    }
    return ids;
  };
  for (const service of eventServices) {
    const events = await rows<{ id: string; type: string; subscribers: string[] | null }>(
      readers[service],
      `select e.id::text as id, e.type,
              array_agg(d.subscriber) filter (where d.subscriber is not null) as subscribers
         from outbox_events e left join outbox_deliveries d on d.event_id = e.id
        group by e.id, e.type`,
    );
    const withoutDelivery: string[] = [];
    for (const event of events) {
      const has = new Set(event.subscribers ?? []);
      for (const subscriber of subscriptions.get(event.type) ?? [])
        if (!has.has(subscriber)) withoutDelivery.push(`${event.type} ${event.id} → ${subscriber}`);
    }
    if (withoutDelivery.length)
      violations.push(
        `${service} has ${withoutDelivery.length} events without a delivery row for a subscriber: ${some(withoutDelivery)}`,
      );

    const deliveries = await rows<{ id: string; subscriber: string; status: string }>(
      readers[service],
      "select event_id::text as id, subscriber, status from outbox_deliveries",
    );
    const undelivered = deliveries.filter((d) => d.status !== "delivered").length;
    if (undelivered)
      violations.push(
        `${service} has ${undelivered} event deliveries not delivered (pending or dead)`,
      );
    const notInInbox: string[] = [];
    for (const d of deliveries)
      if (d.status === "delivered" && !(await inboxOf(d.subscriber)).has(d.id))
        notInInbox.push(`${d.id} → ${d.subscriber}`);
    if (notInInbox.length)
      violations.push(
        `${service} has ${notInInbox.length} delivered events missing from the consumer's inbox: ${some(notInInbox)}`,
      );
  }
}

/** Polls until every order is terminal and every delivery done, or the timeout passes. */
export async function settle(urls: ShopDatabases, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const { readers, close } = await openReaders(urls);
  try {
    for (;;) {
      let busy = 0;
      for (const service of eventServices) {
        const [pending] = await rows<{ n: number }>(
          readers[service],
          "select count(*)::int as n from outbox_deliveries where status = 'pending'",
        );
        busy += pending?.n ?? 0;
      }
      const [open] = await rows<{ n: number }>(
        readers.order,
        "select count(*)::int as n from orders where status not in ('CONFIRMED', 'CANCELLED')",
      );
      busy += open?.n ?? 0;
      if (busy === 0 || Date.now() > deadline) return;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  } finally {
    await close();
  }
}
