import type { Executor } from "@thinmesh/platform";
import { asc, eq } from "drizzle-orm";
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
      const [row] = await db.select().from(payments).where(eq(payments.orderId, orderId));
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
      // racing insert of the same order to commit and then simply inserts nothing.
      const inserted = await db
        .insert(payments)
        .values(paymentRowOf(payment))
        .onConflictDoNothing({ target: payments.orderId })
        .returning({ id: payments.id });
      if (inserted.length === 0) return false;
      if (payment.ledger.length > 0) {
        await db.insert(ledgerEntries).values(
          payment.ledger.map((entry, position) => ({
            paymentId: payment.id,
            position,
            kind: entry.kind,
            account: entry.account,
            direction: entry.direction,
            amountMinor: entry.amount.amountMinor,
            currency: entry.amount.currencyCode,
          })),
        );
      }
      return true;
    },
  };
}

function paymentRowOf(payment: NewPayment): typeof payments.$inferInsert {
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
