import { fromBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { codeFromString } from "@connectrpc/connect/protocol-connect";
import {
  type Event,
  EventSchema,
  EventSinkService,
} from "@thinmesh/contracts/shop/events/v1/events_pb.js";
import { sql } from "drizzle-orm";
import { createPeerClient } from "../client.js";
import { contextOfTrace, newContext, runWithContext } from "../context.js";
import { type AppDatabase, arrayLiteral, rowsOf } from "../database.js";
import type { Logger } from "../logger.js";
import type { Metrics } from "../metrics.js";
import type { EventBus } from "./bus.js";
import { keepLeases, type LeaseKeeper } from "./leases.js";

export interface RelayOptions {
  // biome-ignore lint/suspicious/noExplicitAny: works on any service's database
  db: AppDatabase<any>;
  bus: EventBus;
  /** Base URL of each subscriber's EventSinkService (through the mesh). */
  subscriberUrls: Readonly<Record<string, string>>;
  logger: Logger;
  /** Where to count calls and outcomes (the service's registry); none counted without. */
  metrics?: Pick<Metrics, "outboxBatchEvents" | "outboxDeliveries"> | undefined;
  /** How often to look for due deliveries without a wake-up (other replicas' events, retries). */
  pollIntervalMs?: number;
  /** Calls to one subscriber in flight at once. */
  concurrency?: number;
  /** Most events sent in one call: a backlog goes out in few calls and few transactions. */
  batchSize?: number;
  /** Attempts before an event is parked as dead for that subscriber. */
  maxAttempts?: number;
  baseBackoffMs?: number;
  maxBackoffMs?: number;
  /**
   * How long a delivery this relay took belongs to it before another relay may take it over.
   * The lease is renewed while this relay lives (every third of it), so it bounds how long
   * a dead relay's deliveries wait, not how long a delivery may take.
   */
  leaseMs?: number;
}

export interface Relay {
  start(): void;
  /** Finishes the deliveries in flight, then stops. */
  stop(): Promise<void>;
  /** Look for due deliveries now (to the given subscribers, or to all). */
  wake(subscribers?: ReadonlySet<string>): void;
}

interface Claimed {
  event_id: string;
  subscriber: string;
  attempts: number;
  envelope: Uint8Array;
  /** Decoded already when handed over by the committing code. */
  event?: Event;
}

/** A delivery handed over at commit, leased to this relay since then. */
interface Taken {
  row: Claimed;
  leasedUntil: number;
}

interface Outcome {
  row: Claimed;
  /** Unset when the subscriber accepted the event (applied now or before). */
  error?: ConnectError;
  /** The call failed as a whole (no answer, or the mesh's), not the event at the subscriber. */
  callFailed?: boolean;
}

// The consumer will never accept these, however often it is asked.
const permanentCodes = new Set([Code.InvalidArgument, Code.Unimplemented]);
// A call that failed with these found the subscriber away (down, restarting, unreachable).
const awayCodes = new Set([Code.Unavailable, Code.DeadlineExceeded]);

/**
 * Delivers committed outbox events to their subscribers, at least once. Each subscriber has
 * its own lane, so a slow or absent consumer delays only its own events. Rows are claimed
 * with FOR UPDATE SKIP LOCKED and a lease, so several replicas can relay at once.
 *
 * What this process commits, the relay takes from the commit instead (the bus writes those
 * deliveries leased to it): no claim round trip per hop. A lane takes at most a few batches
 * that way; beyond that, and for retries and other replicas' events, it claims. A poll
 * claims what is due and records what was delivered since the last claim.
 *
 * A lane keeps up to `concurrency` calls in flight. Events that became due while every slot
 * was busy go out together in the next call (up to `batchSize`): when idle, each event leaves
 * at once on its own; under load, the per-call and per-transaction costs are shared.
 */
export function createRelay(options: RelayOptions): Relay {
  const pollIntervalMs = options.pollIntervalMs ?? 1000;
  const concurrency = options.concurrency ?? 1;
  const batchSize = options.batchSize ?? 32;
  const maxAttempts = options.maxAttempts ?? 25;
  const baseBackoffMs = options.baseBackoffMs ?? 250;
  const maxBackoffMs = options.maxBackoffMs ?? 30_000;
  const leaseMs = options.leaseMs ?? 3_000;
  const { db, logger } = options;

  const subscribers = [...new Set([...options.bus.routes.values()].flat())];
  for (const subscriber of subscribers) {
    if (!options.subscriberUrls[subscriber]) {
      throw new Error(
        `no URL for event subscriber "${subscriber}" (set ${subscriber.toUpperCase()}_URL)`,
      );
    }
  }
  const clients = new Map(
    subscribers.map((s) => [s, createPeerClient(EventSinkService, options.subscriberUrls[s]!)]),
  );

  let running = false;
  let poll: NodeJS.Timeout | undefined;
  const lanes: Promise<void>[] = [];
  /** Per subscriber: events may be due (a commit, a poll, a full claim); and its waiting lane. */
  const due = new Map(subscribers.map((s) => [s, true]));
  const wakers = new Map<string, () => void>();
  /** Per subscriber: deliveries handed over at commit, not yet sent. */
  const taken = new Map(subscribers.map((s) => [s, [] as Taken[]]));
  const mostTaken = 4 * concurrency * batchSize;
  /**
   * Per subscriber: the deliveries leased to this relay (taken, claimed, in flight, or done
   * but not yet recorded), whose leases it renews while it lives. A relay that dies (SIGKILL,
   * a lost node) stops renewing, and the others claim its deliveries within one lease.
   */
  const leases = new Map<string, LeaseKeeper<string>>();

  /**
   * Marks the given deliveries delivered (and gives up the leases of `released`, taken but
   * not sent), then claims up to `limit` due ones: one statement.
   */
  async function claim(
    subscriber: string,
    limit: number,
    delivered: string[],
    released: string[] = [],
  ): Promise<Claimed[]> {
    // The rows marked here are leased by this relay, so the claim below does not pick them
    // (had a lease run out, the claim might win and the event go out once more: harmless).
    const marking = delivered.length
      ? sql`delivered as (
          update outbox_deliveries
             set status = 'delivered', delivered_at = now(), lease_until = null, last_error = null
           where subscriber = ${subscriber} and event_id = any(${arrayLiteral(delivered)}::uuid[])),`
      : sql``;
    const releasing = released.length
      ? sql`released as (
          update outbox_deliveries set lease_until = null, attempts = attempts - 1
           where subscriber = ${subscriber} and event_id = any(${arrayLiteral(released)}::uuid[])),`
      : sql``;
    const result = await db.execute(sql`
      with ${marking} ${releasing} claimed as (
        update outbox_deliveries d
           set lease_until = now() + ${`${leaseMs} milliseconds`}::interval, attempts = d.attempts + 1
          from outbox_events e
         where e.id = d.event_id
           and (d.event_id, d.subscriber) in (
                 select event_id, subscriber from outbox_deliveries
                  where subscriber = ${subscriber} and status = 'pending' and next_attempt_at <= now()
                    and (lease_until is null or lease_until < now())
                  order by next_attempt_at, created_at
                  limit ${limit}
                    for update skip locked)
        returning d.event_id, d.subscriber, d.attempts, d.created_at, e.envelope)
      -- In the order they were published: a batch is applied in this order.
      select event_id, subscriber, attempts, envelope from claimed order by created_at`);
    return rowsOf<Claimed>(result);
  }

  /** One call carrying the rows' events; what became of each. */
  async function deliver(subscriber: string, rows: Claimed[]): Promise<Outcome[]> {
    options.metrics?.outboxBatchEvents.observe({ subscriber }, rows.length);
    const events = rows.map((row) => row.event ?? fromBinary(EventSchema, row.envelope));
    // One event travels in its own trace (Jaeger shows the hop in the order's trace); a batch
    // gets a trace of its own, and the consumer applies each event in the event's trace.
    const context = events.length === 1 ? contextOfTrace(events[0]!) : newContext();
    return runWithContext(context, async () => {
      try {
        // No timeout of its own: the mesh's route timeout (mesh/istio/<subscriber>.yaml) ends a
        // call that hangs with 504, and a failed delivery is retried here with backoff.
        const { results } = await clients.get(subscriber)!.deliver({ events });
        return rows.map((row, i) => {
          const result = results[i];
          if (result?.eventId !== row.event_id) {
            return {
              row,
              error: new ConnectError(
                `the subscriber answered ${results.length} results for ${rows.length} events`,
                Code.Internal,
              ),
            };
          }
          const error =
            result.error &&
            new ConnectError(
              result.error.message,
              codeFromString(result.error.code) ?? Code.Unknown,
            );
          return { row, error };
        });
      } catch (cause) {
        const error = ConnectError.from(cause);
        // A call refused as a whole for good (one malformed event fails the request's
        // validation): find the bad ones by sending each event alone.
        if (rows.length > 1 && permanentCodes.has(error.code)) {
          return (await Promise.all(rows.map((row) => deliver(subscriber, [row])))).flat();
        }
        return rows.map((row) => ({ row, error, callFailed: true }));
      }
    });
  }

  /**
   * Makes a subscriber's backed-off deliveries due now: it answered again after calls found it
   * away, so what failed while it was away need not wait out backoffs that grew meanwhile
   * (up to maxBackoffMs) - a restarted service gets its backlog within a poll or so.
   */
  async function dueNow(subscriber: string) {
    await db.execute(sql`
      update outbox_deliveries set next_attempt_at = now()
       where subscriber = ${subscriber} and status = 'pending' and next_attempt_at > now()
         and lease_until is null`);
  }

  /**
   * While a subscriber is away, its oldest backed-off delivery is tried again within a poll:
   * one call per poll finds out when it is back (then dueNow), even when no new event comes
   * to show it, instead of every delivery waiting out a backoff that grew meanwhile.
   */
  async function probeSoon(subscriber: string) {
    const soon = `${pollIntervalMs} milliseconds`;
    await db.execute(sql`
      update outbox_deliveries set next_attempt_at = now() + ${soon}::interval
       where subscriber = ${subscriber}
         and next_attempt_at > now() + ${soon}::interval
         and event_id = (
           select event_id from outbox_deliveries
            where subscriber = ${subscriber} and status = 'pending' and lease_until is null
            order by next_attempt_at limit 1)`);
  }

  function countOutcomes(subscriber: string, outcomes: Outcome[]) {
    const counter = options.metrics?.outboxDeliveries;
    if (!counter) return;
    for (const { row, error } of outcomes) {
      const outcome = !error ? "accepted" : isDead(row, error) ? "dead" : "retry";
      counter.inc({ subscriber, outcome });
    }
  }

  const isDead = (row: Claimed, error: ConnectError) =>
    row.attempts >= maxAttempts || permanentCodes.has(error.code);

  /** Records a lane's failed deliveries (retry later, or dead): one statement for them all. */
  async function recordFailures(subscriber: string, outcomes: Outcome[]) {
    const failed = outcomes.flatMap(({ row, error }) => {
      if (!error) return [];
      const dead = isDead(row, error);
      const delay = Math.min(maxBackoffMs, baseBackoffMs * 2 ** (row.attempts - 1));
      const retryInMs = Math.round(delay * (0.5 + Math.random() / 2));
      const log = logger.child({ eventId: row.event_id, subscriber, attempts: row.attempts });
      if (dead) log.error({ err: error }, "event parked as dead");
      else log.warn({ retryInMs, err: error.message }, "event delivery failed; will retry");
      return [
        {
          event_id: row.event_id,
          status: dead ? "dead" : "pending",
          error: error.message,
          retry_in_ms: retryInMs,
        },
      ];
    });
    if (failed.length > 0) {
      // JSON carries the per-row values as one parameter on either driver.
      await db.execute(sql`
        update outbox_deliveries d
           set status = f.status, lease_until = null, last_error = f.error,
               next_attempt_at = now() + f.retry_in_ms * interval '1 millisecond'
          from jsonb_to_recordset(${JSON.stringify(failed)}::jsonb)
               as f(event_id uuid, status text, error text, retry_in_ms int)
         where d.subscriber = ${subscriber} and d.event_id = f.event_id`);
    }
  }

  /**
   * One subscriber's deliveries: up to `concurrency` calls in flight, topped up as each one
   * finishes (a slow call holds up nothing but its own slot), the outcomes recorded together.
   */
  async function lane(subscriber: string) {
    const inFlight = new Set<Promise<void>>();
    let finished: Outcome[] = [];
    const held = leases.get(subscriber)!;
    /** Calls found the subscriber away since it last answered. */
    let away = false;
    const release = (ids: Iterable<string>) => {
      for (const id of ids) held.release(id);
    };
    /** The finished deliveries the subscriber accepted; failures are recorded here. */
    const takeFinished = async () => {
      const outcomes = finished;
      finished = [];
      countOutcomes(subscriber, outcomes);
      const failed = outcomes.filter((o) => o.error).map((o) => o.row.event_id);
      // Away: a call failed as a whole, or the subscriber answered but could apply none of the
      // events for a transient reason (its database restarting answers every event unavailable).
      const isAway = (o: Outcome) => o.error !== undefined && awayCodes.has(o.error.code);
      if (
        outcomes.some((o) => o.callFailed && isAway(o)) ||
        (outcomes.length > 0 && outcomes.every(isAway))
      ) {
        away = true;
      } else if (away && outcomes.some((o) => !o.error)) {
        away = false;
        try {
          await dueNow(subscriber);
          due.set(subscriber, true);
        } catch (error) {
          logger.warn({ err: error, subscriber }, "cannot retry a subscriber's backlog at once");
        }
      }
      if (failed.length > 0) {
        try {
          await recordFailures(subscriber, outcomes);
        } catch (error) {
          // Their leases run out and they are delivered again.
          logger.warn(
            { err: error, subscriber },
            "cannot record failed deliveries; they will repeat",
          );
        }
        // Recorded (and no longer leased), or left to run out.
        release(failed);
        if (away) {
          try {
            await probeSoon(subscriber);
          } catch (error) {
            logger.warn(
              { err: error, subscriber },
              "cannot schedule a probe of an away subscriber",
            );
          }
        }
      }
      return outcomes.filter((o) => !o.error).map((o) => o.row.event_id);
    };
    /** claim(), but a failure only costs time: unrecorded deliveries repeat, consumers dedupe. */
    const claimOrRepeat = async (limit: number, delivered: string[]) => {
      try {
        const claimed = await claim(subscriber, limit, delivered);
        for (const row of claimed) held.hold(row.event_id);
        return claimed;
      } catch (error) {
        logger.warn(
          { err: error, subscriber },
          "cannot claim outbox rows or record deliveries; will retry (recorded ones will repeat)",
        );
        return [];
      } finally {
        // Marked delivered, or left for their leases to run out and be delivered again.
        release(delivered);
      }
    };
    /** Up to `limit` handed-over deliveries; any whose lease is running out are left to a claim. */
    const takeHandedOver = (limit: number) => {
      const queue = taken.get(subscriber)!;
      const fresh = Date.now() + leaseMs / 2;
      let stale = 0;
      while (stale < queue.length && queue[stale]!.leasedUntil < fresh) stale++;
      const [skipped, rows] = [queue.slice(0, stale), queue.splice(0, stale + limit).slice(stale)];
      // Renewals failed for a while: another relay may have them soon; let it.
      release(skipped.map((t) => t.row.event_id));
      return rows.map((t) => t.row);
    };
    while (running) {
      let rows: Claimed[] = [];
      const free = concurrency - inFlight.size;
      if (free > 0) {
        const room = free * batchSize;
        // What was handed over is older than anything a claim can find but retries: while
        // some of a lane's events are left to claims, it takes no more (see leaseMsFor).
        const handedOver = takeHandedOver(room);
        // A finished delivery wakes the lane too; only look for events if some may be due.
        if (handedOver.length < room && due.get(subscriber)) {
          due.set(subscriber, false);
          const limit = room - handedOver.length;
          // Recording what finished rides along with the claim.
          rows = await claimOrRepeat(limit, await takeFinished());
          // A full claim suggests more are due.
          if (rows.length === limit) due.set(subscriber, true);
        }
        rows.unshift(...handedOver);
      }
      for (const batch of split(rows, free)) {
        const delivery: Promise<void> = deliver(subscriber, batch).then((outcomes) => {
          finished.push(...outcomes);
          inFlight.delete(delivery);
        });
        inFlight.add(delivery);
      }
      // What finished is recorded with the next claim: the poll's, or one for events a
      // commit left to claim, whichever comes first. Alone it would cost a round trip of its
      // own for each call, which at low load is every event; until then the rows stay leased
      // to this relay (were it to die, they would be delivered again, and consumers dedupe).
      // Go on at once while a slot is free and events wait.
      const waiting = due.get(subscriber) || taken.get(subscriber)!.length > 0;
      if (waiting && inFlight.size < concurrency) continue;
      // stop() may have come while this lane was claiming: its wake-up found nobody waiting.
      if (!running) break;
      await new Promise<void>((resolve) => {
        const done = () => {
          wakers.delete(subscriber);
          resolve();
        };
        wakers.set(subscriber, done);
        // A finished delivery frees a slot and has outcomes to record.
        for (const delivery of inFlight) delivery.then(done);
      });
    }
    await Promise.all(inFlight);
    // Handed over but never sent: their leases are given up, for whichever relay claims next.
    const unsent = taken
      .get(subscriber)!
      .splice(0)
      .map((t) => t.row.event_id);
    const delivered = await takeFinished();
    if (delivered.length > 0 || unsent.length > 0) {
      try {
        await claim(subscriber, 0, delivered, unsent);
      } catch (error) {
        logger.warn(
          { err: error, subscriber },
          "cannot record deliveries or give up leases; they repeat once the leases run out",
        );
      }
    }
    held.stop();
  }

  /**
   * Extends this relay's leases on one subscriber's deliveries still pending. Rows recorded
   * meanwhile (delivered, or failed and given up: lease_until null) are left alone. The
   * handed-over ones not yet sent count as fresh again.
   */
  async function renewLeases(subscriber: string, ids: string[]) {
    const renewedAt = Date.now();
    await db.execute(sql`
      update outbox_deliveries
         set lease_until = now() + ${`${leaseMs} milliseconds`}::interval
       where subscriber = ${subscriber} and event_id = any(${arrayLiteral(ids)}::uuid[])
         and status = 'pending' and lease_until is not null`);
    for (const t of taken.get(subscriber) ?? []) {
      t.leasedUntil = Math.max(t.leasedUntil, renewedAt + leaseMs);
    }
  }

  const wakeLane = (subscriber: string) => wakers.get(subscriber)?.();
  const wake = (only?: ReadonlySet<string>) => {
    for (const subscriber of subscribers) {
      if (only && !only.has(subscriber)) continue;
      due.set(subscriber, true);
      wakeLane(subscriber);
    }
  };

  options.bus.handOffTo({
    // A lane that is stopped or behind takes nothing: those deliveries are claimed in turn.
    // Nor does one with events to claim, so that newer events do not overtake them.
    leaseMsFor: (subscriber) =>
      running && !due.get(subscriber) && (taken.get(subscriber)?.length ?? mostTaken) < mostTaken
        ? leaseMs
        : 0,
    committed(handedOver, toClaim) {
      const leasedUntil = Date.now() + leaseMs;
      for (const [subscriber, events] of handedOver) {
        const queue = taken.get(subscriber);
        // Stopped since: the leases run out and the events are claimed.
        if (!queue || !running) continue;
        for (const { id, event, envelope } of events) {
          queue.push({
            row: { event_id: id, subscriber, attempts: 1, envelope, event },
            leasedUntil,
          });
          leases.get(subscriber)?.hold(id);
        }
        wakeLane(subscriber);
      }
      wake(toClaim);
    },
  });

  return {
    start() {
      if (running) return;
      running = true;
      for (const subscriber of subscribers) {
        leases.set(
          subscriber,
          keepLeases({
            renewEveryMs: Math.max(10, Math.floor(leaseMs / 3)),
            renew: (ids) => renewLeases(subscriber, ids),
            onError: (error) =>
              logger.warn(
                { err: error, subscriber },
                "cannot renew the leases of outbox deliveries; another relay may deliver them again",
              ),
          }),
        );
        lanes.push(lane(subscriber));
      }
      // On a clock of its own: a lane kept busy by its own events still polls.
      poll = setInterval(wake, pollIntervalMs);
      poll.unref();
    },
    async stop() {
      running = false;
      clearInterval(poll);
      for (const waker of [...wakers.values()]) waker();
      await Promise.all(lanes.splice(0));
    },
    wake,
  };
}

/** The rows in at most `parts` batches of near-equal size, in order. */
function split<T>(rows: T[], parts: number): T[][] {
  if (rows.length === 0 || parts <= 0) return [];
  const size = Math.ceil(rows.length / Math.min(parts, rows.length));
  const batches: T[][] = [];
  for (let i = 0; i < rows.length; i += size) batches.push(rows.slice(i, i + size));
  return batches;
}
