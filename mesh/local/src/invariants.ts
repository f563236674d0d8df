// The saga's invariants, checked against the four services' databases (design.md section 3):
// after any fault heals, every order is CONFIRMED or CANCELLED, no order is charged twice,
// captured money equals the total of confirmed orders, reserved stock returns on cancel, and
// no committed event is lost. Used by the end-to-end tests (test/system) and bench/orders.js.
import { connectPostgres } from "@thinmesh/platform";

export type DatabaseUrls = Record<"catalog" | "order" | "payment" | "auth", string>;

export interface StockSnapshot {
  /** product id → available + committed (reserved stock is accounted for separately). */
  byProduct: Map<
    string,
    { available: number; reserved: number; committed: number; initial: number }
  >;
}

export interface InvariantReport {
  orders: { total: number; confirmed: number; cancelled: number };
  capturedMinor: bigint;
  confirmedTotalMinor: bigint;
  violations: string[];
}

const count = (rows: { n: number | string }[]) => Number(rows[0]?.n ?? 0);

/** Stock per product, to compare before and after a run. */
export async function snapshotStock(urls: DatabaseUrls): Promise<StockSnapshot> {
  const sql = connectPostgres(urls.catalog, { max: 1, onnotice: () => {} });
  try {
    const rows = await sql<
      { id: string; available: number; reserved: number; committed: number; initial: number }[]
    >`
      select p.id::text as id, p.stock_available as available, p.initial_stock as initial,
             coalesce(sum(l.quantity) filter (where r.status = 'reserved'), 0)::int as reserved,
             coalesce(sum(l.quantity) filter (where r.status = 'committed'), 0)::int as committed
        from products p
        left join reservation_lines l on l.product_id::text = p.id::text
        left join reservations r on r.order_id = l.order_id
       group by p.id`;
    return { byProduct: new Map(rows.map((r) => [r.id, r])) };
  } finally {
    await sql.end();
  }
}

/**
 * Checks every invariant; `before` is the stock snapshot taken before the orders of the run
 * were placed (stock is conserved: what left "available" was sold, nothing vanished). Stock
 * set by an admin during the run (SetStock) would count as a violation: don't.
 */
export async function checkInvariants(
  urls: DatabaseUrls,
  before: StockSnapshot,
): Promise<InvariantReport> {
  const violations: string[] = [];
  const order = connectPostgres(urls.order, { max: 1, onnotice: () => {} });
  const payment = connectPostgres(urls.payment, { max: 1, onnotice: () => {} });
  try {
    const orders = await order<{ id: string; status: string; total: string }[]>`
      select id::text, status, total_minor::text as total from orders`;
    const stuck = orders.filter((o) => o.status !== "CONFIRMED" && o.status !== "CANCELLED");
    if (stuck.length)
      violations.push(
        `${stuck.length} orders are not terminal: ${stuck
          .slice(0, 5)
          .map((o) => `${o.id} ${o.status}`)
          .join(", ")}`,
      );

    const payments = await payment<{ order_id: string; status: string; amount: string }[]>`
      select order_id::text, status, amount_minor::text as amount from payments`;
    const captured = new Map<string, bigint>();
    for (const p of payments.filter((p) => p.status === "CAPTURED")) {
      if (captured.has(p.order_id)) violations.push(`order ${p.order_id} was charged twice`);
      captured.set(p.order_id, (captured.get(p.order_id) ?? 0n) + BigInt(p.amount));
    }
    const unbalanced = await payment<{ payment_id: string }[]>`
      select payment_id::text from ledger_entries group by payment_id
      having sum(case when direction = 'debit' then amount_minor else -amount_minor end) <> 0`;
    for (const u of unbalanced)
      violations.push(`the ledger entries of payment ${u.payment_id} do not balance`);

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

    const after = await snapshotStock(urls);
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

    for (const service of ["catalog", "order", "payment"] as const) {
      const sql = connectPostgres(urls[service], { max: 1, onnotice: () => {} });
      try {
        const undelivered = count(
          await sql`select count(*) as n from outbox_deliveries where status <> 'delivered'`,
        );
        if (undelivered)
          violations.push(
            `${service} has ${undelivered} event deliveries not delivered (pending or dead)`,
          );
      } finally {
        await sql.end();
      }
    }
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
    await order.end();
    await payment.end();
  }
}

/** Polls until every order is terminal and every delivery done, or the timeout passes. */
export async function settle(urls: DatabaseUrls, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let busy = 0;
    for (const service of ["catalog", "order", "payment"] as const) {
      const sql = connectPostgres(urls[service], { max: 1, onnotice: () => {} });
      try {
        busy += count(
          await sql`select count(*) as n from outbox_deliveries where status = 'pending'`,
        );
        if (service === "order") {
          busy += count(
            await sql`select count(*) as n from orders where status not in ('CONFIRMED', 'CANCELLED')`,
          );
        }
      } finally {
        await sql.end();
      }
    }
    if (busy === 0 || Date.now() > deadline) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
