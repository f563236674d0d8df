import { fromBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { EventSchema, EventSinkService } from "@thinmesh/contracts/shop/events/v1/events_pb.js";
import { sql } from "drizzle-orm";
import { createPeerClient } from "../client.js";
import { contextFromHeaders, runWithContext } from "../context.js";
import type { AppDatabase } from "../database.js";
import type { Logger } from "../logger.js";
import type { EventBus } from "./bus.js";

export interface RelayOptions {
  // biome-ignore lint/suspicious/noExplicitAny: works on any service's database
  db: AppDatabase<any>;
  bus: EventBus;
  /** Base URL of each subscriber's EventSinkService (through the mesh). */
  subscriberUrls: Readonly<Record<string, string>>;
  logger: Logger;
  /** How often to look for due deliveries without a wake-up (other replicas' events, retries). */
  pollIntervalMs?: number;
  /** Deliveries in flight per subscriber. */
  concurrency?: number;
  /** Attempts before an event is parked as dead for that subscriber. */
  maxAttempts?: number;
  baseBackoffMs?: number;
  maxBackoffMs?: number;
  /** How long a claimed delivery belongs to this relay before another may take it over. */
  leaseMs?: number;
}

export interface Relay {
  start(): void;
  /** Finishes the deliveries in flight, then stops. */
  stop(): Promise<void>;
  /** Look for due deliveries now. */
  wake(): void;
}

interface Claimed {
  event_id: string;
  subscriber: string;
  attempts: number;
  envelope: Uint8Array;
}

// The consumer will never accept these, however often it is asked.
const permanentCodes = new Set([Code.InvalidArgument, Code.Unimplemented]);

/**
 * Delivers committed outbox events to their subscribers, at least once. Each subscriber has
 * its own lane, so a slow or absent consumer delays only its own events. Rows are claimed
 * with FOR UPDATE SKIP LOCKED and a lease, so several replicas can relay at once.
 */
export function createRelay(options: RelayOptions): Relay {
  const pollIntervalMs = options.pollIntervalMs ?? 1000;
  const concurrency = options.concurrency ?? 16;
  const maxAttempts = options.maxAttempts ?? 25;
  const baseBackoffMs = options.baseBackoffMs ?? 250;
  const maxBackoffMs = options.maxBackoffMs ?? 30_000;
  const leaseMs = options.leaseMs ?? 30_000;
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
  const wakers = new Set<() => void>();
  const lanes: Promise<void>[] = [];

  async function claim(subscriber: string, limit: number): Promise<Claimed[]> {
    const result = await db.execute(sql`
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
      returning d.event_id, d.subscriber, d.attempts, e.envelope`);
    return rowsOf<Claimed>(result);
  }

  /** Delivers one claimed event; true when the subscriber accepted it. */
  async function deliver(row: Claimed): Promise<boolean> {
    const event = fromBinary(EventSchema, row.envelope);
    const context = contextFromHeaders(
      new Headers(
        Object.entries({ traceparent: event.traceparent, tracestate: event.tracestate }).filter(
          ([, v]) => v,
        ),
      ),
    );
    return runWithContext(context, async () => {
      const log = logger.child({
        eventId: event.id,
        eventType: event.type,
        subscriber: row.subscriber,
      });
      try {
        await clients
          .get(row.subscriber)!
          .deliver({ event }, { signal: AbortSignal.timeout(leaseMs) });
        log.debug({ attempts: row.attempts }, "event delivered");
        return true;
      } catch (error) {
        const connectError = ConnectError.from(error);
        const dead = row.attempts >= maxAttempts || permanentCodes.has(connectError.code);
        const delay = Math.min(maxBackoffMs, baseBackoffMs * 2 ** (row.attempts - 1));
        const jittered = Math.round(delay * (0.5 + Math.random() / 2));
        await db.execute(sql`
          update outbox_deliveries
             set status = ${dead ? "dead" : "pending"}, lease_until = null, last_error = ${connectError.message},
                 next_attempt_at = now() + ${`${jittered} milliseconds`}::interval
           where event_id = ${row.event_id} and subscriber = ${row.subscriber}`);
        if (dead) log.error({ attempts: row.attempts, err: connectError }, "event parked as dead");
        else
          log.warn(
            { attempts: row.attempts, retryInMs: jittered, err: connectError.message },
            "event delivery failed; will retry",
          );
        return false;
      }
    });
  }

  /** Records a batch's successful deliveries in one statement (a busy relay's hottest query). */
  async function markDelivered(subscriber: string, rows: Claimed[]) {
    if (rows.length === 0) return;
    const ids = `{${rows.map((r) => r.event_id).join(",")}}`;
    await db.execute(sql`
      update outbox_deliveries
         set status = 'delivered', delivered_at = now(), lease_until = null, last_error = null
       where subscriber = ${subscriber} and event_id = any(${ids}::uuid[])`);
  }

  /**
   * One subscriber's deliveries: up to `concurrency` in flight at once, topped up as each one
   * finishes (a slow delivery holds up nothing but its own slot), the accepted ones recorded
   * together.
   */
  async function lane(subscriber: string) {
    const inFlight = new Set<Promise<void>>();
    let accepted: Claimed[] = [];
    const recordAccepted = async () => {
      if (accepted.length === 0) return;
      const rows = accepted;
      accepted = [];
      try {
        await markDelivered(subscriber, rows);
      } catch (error) {
        // The leases run out and the events are delivered again; consumers dedupe them.
        logger.warn({ err: error, subscriber }, "cannot record deliveries; they will repeat");
      }
    };
    while (running) {
      let claimed: Claimed[] = [];
      const free = concurrency - inFlight.size;
      if (free > 0) {
        try {
          claimed = await claim(subscriber, free);
        } catch (error) {
          logger.warn({ err: error, subscriber }, "cannot claim outbox rows; will retry");
        }
      }
      for (const row of claimed) {
        const delivery: Promise<void> = deliver(row).then((ok) => {
          if (ok) accepted.push(row);
          inFlight.delete(delivery);
        });
        inFlight.add(delivery);
      }
      await recordAccepted();
      // A full claim suggests more are due: look again as soon as a slot is free.
      if (claimed.length > 0 && claimed.length === free) {
        if (inFlight.size >= concurrency) await Promise.race(inFlight);
        continue;
      }
      // stop() may have come while this lane was claiming: its wake-up found nobody waiting.
      if (!running) break;
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          wakers.delete(done);
          resolve();
        };
        const timer = setTimeout(done, pollIntervalMs);
        wakers.add(done);
        // A finished delivery frees a slot and has an acceptance to record.
        for (const delivery of inFlight) delivery.then(done);
      });
    }
    await Promise.all(inFlight);
    await recordAccepted();
  }

  const wake = () => {
    for (const waker of [...wakers]) waker();
  };
  options.bus.onCommit(wake);

  return {
    start() {
      if (running) return;
      running = true;
      for (const subscriber of subscribers) lanes.push(lane(subscriber));
    },
    async stop() {
      running = false;
      wake();
      await Promise.all(lanes.splice(0));
    },
    wake,
  };
}

/** Rows of a raw query on either driver (postgres-js returns an array, PGlite { rows }). */
export function rowsOf<T>(result: unknown): T[] {
  return (Array.isArray(result) ? result : (result as { rows: T[] }).rows) as T[];
}
