import {
  contextOfTrace,
  keepLeases,
  type LeaseKeeper,
  type Logger,
  runWithContext,
} from "@thinmesh/platform";
import { chargeOnce, type RetryPolicy } from "./domain/charging.js";
import type { ChargeStore, PendingCharge } from "./domain/payment.js";
import type { PaymentProvider } from "./domain/provider.js";

export interface ChargerOptions extends Partial<RetryPolicy> {
  provider: PaymentProvider;
  store: ChargeStore;
  logger: Logger;
  /**
   * How long a charge is leased to the process making it; renewed while it lives, so a
   * crashed process's charges are taken over this soon after.
   */
  leaseMs?: number;
  /** How often to look for charges that are due (retries, other processes' orphans). */
  pollIntervalMs?: number;
  /** Provider calls in flight at once. */
  concurrency?: number;
  /** How long stop() waits for provider calls in flight; unfinished ones are taken over later. */
  stopGraceMs?: number;
}

export interface Charger {
  /** How long a charge recorded now should be leased to this process (see submit). */
  readonly leaseMs: number;
  /** Charges a pending charge this process recorded (leased to it) and has just committed. */
  submit(charge: PendingCharge): void;
  /** Starts taking due charges: those left pending by a crash are taken at once. */
  start(): void;
  /**
   * Waits (up to stopGraceMs) for the charges in flight, gives up the others' leases, then
   * stops. A charge still in flight then is taken over once its lease runs out, with the same
   * idempotency key.
   */
  stop(): Promise<void>;
}

/**
 * Makes the pending charges: those this process recorded (handed over when their request
 * commits), and every charge that is due and leased to nobody (transient provider failures
 * after their backoff, a crashed process's charges once their lease has run out).
 */
export function createCharger(options: ChargerOptions): Charger {
  const leaseMs = options.leaseMs ?? 3_000;
  const pollIntervalMs = options.pollIntervalMs ?? 1_000;
  const concurrency = options.concurrency ?? 8;
  const policy: RetryPolicy = {
    baseBackoffMs: options.baseBackoffMs ?? 250,
    maxBackoffMs: options.maxBackoffMs ?? 30_000,
  };
  const { store, logger } = options;
  const queue: PendingCharge[] = [];
  const inFlight = new Set<Promise<void>>();
  const retryTimers = new Set<NodeJS.Timeout>();
  let running = false;
  let claiming: Promise<void> | undefined;
  let poll: NodeJS.Timeout | undefined;
  let leases: LeaseKeeper<string> | undefined;

  const pump = () => {
    while (running && inFlight.size < concurrency && queue.length > 0) {
      const charge = queue.shift()!;
      // In the trace of the request that asked for it, however it got here.
      const run: Promise<void> = runWithContext(contextOfTrace(charge.trace), () =>
        attempt(charge),
      ).finally(() => {
        inFlight.delete(run);
        leases?.release(charge.id);
        pump();
      });
      inFlight.add(run);
    }
  };

  async function attempt(charge: PendingCharge) {
    const log = logger.child({
      orderId: charge.orderId,
      paymentId: charge.id,
      attempt: charge.attempts,
    });
    try {
      const outcome = await chargeOnce(options.provider, store, charge, policy);
      switch (outcome.kind) {
        case "settled":
          log.info(
            { status: outcome.payment.status, reason: outcome.payment.declineReason },
            outcome.payment.status === "CAPTURED" ? "payment captured" : "payment declined",
          );
          return;
        case "settled elsewhere":
          log.info("the charge was settled by another process meanwhile; nothing recorded");
          return;
        case "retry": {
          const fields = { retryInMs: outcome.retryInMs, err: outcome.error };
          if (outcome.transient) log.warn(fields, "the provider cannot charge now; will retry");
          else log.error(fields, "the provider failed unexpectedly; will retry");
          // Its own timer, so the retry does not wait for the next poll.
          const timer = setTimeout(() => {
            retryTimers.delete(timer);
            claimDue();
          }, outcome.retryInMs + 10);
          timer.unref();
          retryTimers.add(timer);
          return;
        }
      }
    } catch (error) {
      // Recording failed (the database is away): the lease runs out and the charge is made
      // again with the same idempotency key, which the provider answers as before.
      log.warn(
        { err: error },
        "cannot record the charge's outcome; it is retried once its lease runs out",
      );
    }
  }

  const claimDue = () => {
    if (!running || claiming) return;
    const free = concurrency - inFlight.size - queue.length;
    if (free <= 0) return;
    claiming = store
      .claimDue(free, leaseMs)
      .then((claimed) => {
        for (const charge of claimed) leases?.hold(charge.id);
        queue.push(...claimed);
        pump();
      })
      .catch((error: unknown) => {
        logger.warn({ err: error }, "cannot look for due charges; will try again");
      })
      .finally(() => {
        claiming = undefined;
      });
  };

  return {
    leaseMs,
    submit(charge) {
      // Not running: its lease runs out and a claim takes it.
      if (!running) return;
      leases?.hold(charge.id);
      queue.push(charge);
      pump();
    },
    start() {
      if (running) return;
      running = true;
      leases = keepLeases({
        renewEveryMs: Math.max(50, Math.floor(leaseMs / 3)),
        renew: (ids) => store.renewLeases(ids, leaseMs),
        onError: (error) =>
          logger.warn(
            { err: error },
            "cannot renew charge leases; another process may take them over",
          ),
      });
      poll = setInterval(claimDue, pollIntervalMs);
      poll.unref();
      claimDue();
    },
    async stop() {
      if (!running) return;
      running = false;
      clearInterval(poll);
      for (const timer of retryTimers) clearTimeout(timer);
      retryTimers.clear();
      await claiming;
      let graceTimer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.all(inFlight),
        new Promise<void>((resolve) => {
          graceTimer = setTimeout(resolve, options.stopGraceMs ?? 5_000);
        }),
      ]);
      clearTimeout(graceTimer);
      const unstarted = queue.splice(0).map((charge) => charge.id);
      if (unstarted.length > 0) {
        await store.releaseLeases(unstarted).catch((error: unknown) => {
          logger.warn({ err: error }, "cannot give up charge leases; they run out by themselves");
        });
      }
      leases?.stop();
    },
  };
}
