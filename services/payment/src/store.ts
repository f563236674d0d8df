import { type Executor, rowsOf, tableRows } from "@thinmesh/platform";
import { asc, eq, sql } from "drizzle-orm";
import { ledgerEntries, payments, type schema } from "./db/schema.js";
import type { NewPayment, Payment, PaymentStore } from "./domain/payment.js";

type PaymentRow = typeof payments.$inferSelect;
type LedgerRow = typeof ledgerEntries.$inferSelect;

/**
 * The payment service's persistence on drizzle (Postgres or PGlite alike). Event handlers
 * pass their transaction, so the payment commits with the inbox record and the outbox event.
 */
export function createPaymentStore(db: Executor<typeof schema>): PaymentStore {
  return {
    async findByOrderId(orderId) {
      // On every PaymentRequested: raw sql (see tableRows).
      const [row] = tableRows(
        payments,
        await db.execute(sql`select * from ${payments} where order_id = ${orderId}`),
      );
      if (!row) return undefined;
      const ledger = await db
        .select()
        .from(ledgerEntries)
        .where(eq(ledgerEntries.paymentId, row.id))
        .orderBy(asc(ledgerEntries.position));
      return paymentOf(row, ledger);
    },

    async insertIfFirstForOrder(payment) {
      // ON CONFLICT DO NOTHING instead of catching the unique violation: a failed statement
      // would abort the whole transaction (inbox record included), while this waits for a
      // racing insert of the same order to commit and then simply inserts nothing. The ledger
      // entries ride in the same statement, written only if the payment was.
      const row = paymentRowOf(payment);
      const ledger = payment.ledger.map((entry, position) => ({
        position,
        kind: entry.kind,
        account: entry.account,
        direction: entry.direction,
        amount_minor: entry.amount.amountMinor.toString(),
        currency: entry.amount.currencyCode,
      }));
      const result = await db.execute(sql`
        with inserted as (
               insert into ${payments} (id, order_id, user_id, status, amount_minor, currency,
                                        provider_reference, decline_reason)
               values (${row.id}, ${row.orderId}, ${row.userId}, ${row.status}, ${row.amountMinor},
                       ${row.currency}, ${row.providerReference}, ${row.declineReason})
               on conflict (order_id) do nothing
               returning id),
             entries as (
               insert into ${ledgerEntries} (payment_id, position, kind, account, direction,
                                             amount_minor, currency)
               select inserted.id, l.position, l.kind, l.account, l.direction, l.amount_minor, l.currency
                 from inserted,
                      jsonb_to_recordset(${JSON.stringify(ledger)}::jsonb)
                        as l(position int, kind text, account text, direction text,
                             amount_minor bigint, currency text))
        select count(*)::int as inserted from inserted`);
      return rowsOf<{ inserted: number }>(result)[0]?.inserted === 1;
    },
  };
}

function paymentRowOf(payment: NewPayment) {
  return {
    id: payment.id,
    orderId: payment.orderId,
    userId: payment.userId,
    status: payment.status,
    amountMinor: payment.amount.amountMinor,
    currency: payment.amount.currencyCode,
    providerReference: payment.providerReference ?? null,
    declineReason: payment.declineReason ?? null,
  };
}

function paymentOf(row: PaymentRow, ledger: LedgerRow[]): Payment {
  return {
    id: row.id,
    orderId: row.orderId,
    userId: row.userId,
    status: row.status,
    amount: { currencyCode: row.currency, amountMinor: row.amountMinor },
    providerReference: row.providerReference ?? undefined,
    declineReason: row.declineReason ?? undefined,
    ledger: ledger.map((entry) => ({
      kind: entry.kind,
      account: entry.account,
      direction: entry.direction,
      amount: { currencyCode: entry.currency, amountMinor: entry.amountMinor },
      createdAt: entry.createdAt,
    })),
    createdAt: row.createdAt,
  };
}
