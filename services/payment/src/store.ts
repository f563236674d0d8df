import {
  type AppDatabase,
  arrayLiteral,
  type EventBus,
  type Executor,
  rowsOf,
  tableRows,
} from "@thinmesh/platform";
import { asc, eq, sql } from "drizzle-orm";
import { ledgerEntries, payments, type schema } from "./db/schema.js";
import type { ChargeStore, Payment, PaymentStore, PendingCharge } from "./domain/payment.js";
import { publishOutcome } from "./messages.js";

type PaymentRow = typeof payments.$inferSelect;
type LedgerRow = typeof ledgerEntries.$inferSelect;

/**
 * The payment service's persistence on drizzle (Postgres or PGlite alike). The event handler
 * passes its transaction, so the charge's intent commits with the inbox record.
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

    async insertIntent(charge, leaseMs) {
      // ON CONFLICT DO NOTHING instead of catching the unique violation: a failed statement
      // would abort the whole transaction (inbox record included), while this waits for a
      // racing insert of the same order to commit and then simply inserts nothing.
      const result = await db.execute(sql`
        insert into ${payments} (id, order_id, user_id, status, amount_minor, currency,
                                 payment_token, charge_attempts, lease_until, traceparent, tracestate)
        values (${charge.id}, ${charge.orderId}, ${charge.userId}, 'PENDING',
                ${charge.amount.amountMinor.toString()}, ${charge.amount.currencyCode},
                ${charge.paymentToken}, ${charge.attempts},
                now() + ${leaseMs} * interval '1 millisecond',
                ${charge.trace.traceparent}, ${charge.trace.tracestate})
        on conflict (order_id) do nothing
        returning id`);
      return rowsOf(result).length === 1;
    },
  };
}

/**
 * Charging's persistence: short statements and one short transaction per outcome, none open
 * while the provider is called. The outcome's event commits with it, through the bus.
 */
export function createChargeStore(db: AppDatabase<typeof schema>, bus: EventBus): ChargeStore {
  return {
    async claimDue(limit, leaseMs) {
      const result = await db.execute(sql`
        update ${payments}
           set lease_until = now() + ${leaseMs} * interval '1 millisecond',
               charge_attempts = charge_attempts + 1
         where id in (select id from ${payments}
                       where status = 'PENDING' and next_charge_at <= now()
                         and (lease_until is null or lease_until < now())
                       order by next_charge_at
                       limit ${limit}
                         for update skip locked)
        returning *`);
      return tableRows(payments, result).map(pendingChargeOf);
    },

    async renewLeases(ids, leaseMs) {
      await db.execute(sql`
        update ${payments} set lease_until = now() + ${leaseMs} * interval '1 millisecond'
         where id = any(${arrayLiteral(ids)}::uuid[]) and status = 'PENDING'`);
    },

    async releaseLeases(ids) {
      await db.execute(sql`
        update ${payments} set lease_until = null, charge_attempts = charge_attempts - 1
         where id = any(${arrayLiteral(ids)}::uuid[]) and status = 'PENDING'`);
    },

    async retryLater(id, delayMs, error) {
      await db.execute(sql`
        update ${payments}
           set lease_until = null, last_error = ${error},
               next_charge_at = now() + ${delayMs} * interval '1 millisecond'
         where id = ${id} and status = 'PENDING'`);
    },

    async settle(payment) {
      return bus.transaction(async (tx, publish) => {
        // The ledger entries ride in the same statement, written only if the charge was still
        // pending; the token is forgotten once the charge is made.
        const ledger = payment.ledger.map((entry, position) => ({
          position,
          kind: entry.kind,
          account: entry.account,
          direction: entry.direction,
          amount_minor: entry.amount.amountMinor.toString(),
          currency: entry.amount.currencyCode,
        }));
        const result = await tx.execute(sql`
          with settled as (
                 update ${payments}
                    set status = ${payment.status}, provider_reference = ${payment.providerReference ?? null},
                        decline_reason = ${payment.declineReason ?? null}, payment_token = null,
                        lease_until = null, last_error = null, settled_at = now()
                  where id = ${payment.id} and status = 'PENDING'
                 returning id),
               entries as (
                 insert into ${ledgerEntries} (payment_id, position, kind, account, direction,
                                               amount_minor, currency)
                 select settled.id, l.position, l.kind, l.account, l.direction, l.amount_minor, l.currency
                   from settled,
                        jsonb_to_recordset(${JSON.stringify(ledger)}::jsonb)
                          as l(position int, kind text, account text, direction text,
                               amount_minor bigint, currency text))
          select count(*)::int as settled from settled`);
        const settled = rowsOf<{ settled: number }>(result)[0]?.settled === 1;
        if (settled) await publishOutcome(publish, payment);
        return settled;
      });
    },
  };
}

function pendingChargeOf(row: PaymentRow): PendingCharge {
  return {
    id: row.id,
    orderId: row.orderId,
    userId: row.userId,
    amount: { currencyCode: row.currency, amountMinor: row.amountMinor },
    paymentToken: row.paymentToken ?? "",
    attempts: row.chargeAttempts,
    trace: { traceparent: row.traceparent, tracestate: row.tracestate },
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
