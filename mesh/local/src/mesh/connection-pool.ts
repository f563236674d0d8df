/**
 * Envoy's circuit breakers for one calling proxy and one destination cluster, as Istio's
 * connectionPool sets them. HTTP/1: one request per connection; beyond tcp.maxConnections
 * requests QUEUE (no 503) up to http.http1MaxPendingRequests, beyond that the answer is an
 * overflow (the caller answers 503, flag UO, header x-envoy-overloaded: true, never retried).
 * HTTP/2 multiplexes: http.http2MaxRequests bounds concurrent requests (Envoy's max_requests,
 * which bounds HTTP/1 requests as well). maxRetries bounds concurrent retries: tryRetry() false
 * means the retry is skipped (Envoy's upstream_rq_retry_overflow). maxRequestsPerConnection,
 * connectTimeoutMs and idleTimeoutMs are the caller's to apply to its connections.
 */
import type { ConnectionPoolSettings } from "./destinations.js";

export interface Lease {
  release(): void;
}
export interface Overflow {
  overflow: true;
}

export const OVERFLOW: Overflow = Object.freeze({ overflow: true });

interface Waiter {
  grant(lease: Lease): void;
  fail(error: Error): void;
}

export class ConnectionPool {
  readonly maxRequestsPerConnection: number;
  readonly connectTimeoutMs: number;
  readonly idleTimeoutMs: number;
  #activeRequests = 0;
  #activeHttp1 = 0;
  #activeRetries = 0;
  readonly #pending: Waiter[] = [];

  constructor(readonly settings: ConnectionPoolSettings) {
    this.maxRequestsPerConnection = settings.maxRequestsPerConnection;
    this.connectTimeoutMs = settings.connectTimeoutMs;
    this.idleTimeoutMs = settings.idleTimeoutMs;
  }

  get activeRequests(): number {
    return this.#activeRequests;
  }
  get pendingRequests(): number {
    return this.#pending.length;
  }
  get activeRetries(): number {
    return this.#activeRetries;
  }

  /**
   * A lease for one request (settled at once when a connection is free, later when it has to
   * queue: the signal, e.g. the route timeout, takes it out of the queue again), or an overflow.
   */
  acquire(protocol: "http1" | "http2", signal?: AbortSignal): Promise<Lease> | Overflow {
    if (this.#activeRequests >= this.settings.http2MaxRequests) return OVERFLOW;
    if (protocol === "http2") return Promise.resolve(this.#lease(false));
    if (this.#activeHttp1 < this.settings.maxConnections) return Promise.resolve(this.#lease(true));
    if (this.#pending.length >= this.settings.http1MaxPendingRequests) return OVERFLOW;
    return new Promise<Lease>((resolve, reject) => {
      const waiter: Waiter = {
        grant: (lease) => {
          signal?.removeEventListener("abort", onAbort);
          resolve(lease);
        },
        fail: reject,
      };
      const onAbort = () => {
        const index = this.#pending.indexOf(waiter);
        if (index >= 0) this.#pending.splice(index, 1);
        reject(signal?.reason ?? new Error("aborted while queued for a connection"));
      };
      if (signal?.aborted) return onAbort();
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#pending.push(waiter);
    });
  }

  /** Whether a retry may start now; every true must be followed by retryFinished(). */
  tryRetry(): boolean {
    if (this.#activeRetries >= this.settings.maxRetries) return false;
    this.#activeRetries++;
    return true;
  }

  retryFinished(): void {
    if (this.#activeRetries > 0) this.#activeRetries--;
  }

  #lease(http1: boolean): Lease {
    this.#activeRequests++;
    if (http1) this.#activeHttp1++;
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        this.#activeRequests--;
        if (!http1) return;
        this.#activeHttp1--;
        // The freed connection serves the oldest queued request.
        const next = this.#pending.shift();
        if (next) next.grant(this.#lease(true));
      },
    };
  }
}

export const isOverflow = (value: unknown): value is Overflow =>
  typeof value === "object" && value !== null && (value as Overflow).overflow === true;
