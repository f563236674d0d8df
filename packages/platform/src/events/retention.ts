import { type SQL, sql } from "drizzle-orm";
import { type AppDatabase, rowsOf } from "../database.js";
import type { Logger } from "../logger.js";

export interface Pruned {
  /** Outbox events removed (their delivery rows go with them). */
  events: number;
  /** Inbox records removed. */
  inbox: number;
}

/**
 * Deletes what has served its purpose: outbox events older than `keepHours` that every
 * subscriber has accepted (pending and dead ones stay, whatever their age), and inbox records
 * older than that (a redelivery comes within minutes; after days, none will). Works in chunks
 * of `chunk` rows with SKIP LOCKED, so replicas pruning at once neither wait nor collide.
 */
export async function pruneEvents(
  // biome-ignore lint/suspicious/noExplicitAny: works on any service's database
  db: AppDatabase<any>,
  keepHours: number,
  chunk = 1000,
): Promise<Pruned> {
  const cutoff = sql`now() - make_interval(hours => ${keepHours})`;
  /** Runs a DELETE … RETURNING 1 of at most `chunk` rows until one deletes fewer. */
  const deleteAll = async (chunkDelete: SQL) => {
    let total = 0;
    for (;;) {
      const [row] = rowsOf<{ n: number }>(
        await db.execute(sql`with gone as (${chunkDelete}) select count(*)::int as n from gone`),
      );
      total += row?.n ?? 0;
      if ((row?.n ?? 0) < chunk) return total;
    }
  };
  return {
    events: await deleteAll(sql`
      delete from outbox_events where id in (
        select id from outbox_events e
         where e.created_at < ${cutoff}
           and not exists (select 1 from outbox_deliveries d
                            where d.event_id = e.id and d.status <> 'delivered')
         limit ${chunk}
           for update skip locked)
      returning 1`),
    inbox: await deleteAll(sql`
      delete from inbox where event_id in (
        select event_id from inbox where handled_at < ${cutoff}
         limit ${chunk}
           for update skip locked)
      returning 1`),
  };
}

export interface PruningOptions {
  // biome-ignore lint/suspicious/noExplicitAny: works on any service's database
  db: AppDatabase<any>;
  logger: Logger;
  keepHours: number;
  /** Time between two prunings; the first runs at once. */
  intervalMs?: number;
}

/** Prunes now and then every intervalMs until stopped; a failure is logged and retried later. */
export function startPruning(options: PruningOptions): { stop(): Promise<void> } {
  const intervalMs = options.intervalMs ?? 10 * 60_000;
  let running: Promise<void> | undefined;
  const prune = () => {
    running ??= pruneEvents(options.db, options.keepHours)
      .then((pruned) => {
        if (pruned.events || pruned.inbox) {
          options.logger.info({ ...pruned, keepHours: options.keepHours }, "pruned old events");
        }
      })
      .catch((error: unknown) => {
        options.logger.warn({ err: error }, "cannot prune old events; will try again later");
      })
      .finally(() => {
        running = undefined;
      });
  };
  prune();
  const timer = setInterval(prune, intervalMs);
  timer.unref();
  return {
    async stop() {
      clearInterval(timer);
      await running;
    },
  };
}
