/**
 * Envoy's circuit breakers for one calling proxy and one destination cluster, as Istio's
 * connectionPool sets them, for an HTTP/2 upstream (every port of the shop is `http2`, so
 * Envoy's upstream clusters speak HTTP/2): each host gets one connection that multiplexes
 * every request.
 * - `http.http2MaxRequests` (Envoy's max_requests): requests in progress; one more is an
 *   overflow.
 * - `http.http1MaxPendingRequests` (max_pending_requests, whatever its name): requests waiting
 *   for a connection to be ready. Over HTTP/2 a request waits only while its host's connection
 *   is being established (Envoy's docs: "this circuit breaker will only be hit when no
 *   connection is already established"); one more is an overflow.
 * - `tcp.maxConnections` (max_connections): Envoy always lets a host with no usable connection
 *   open one (a draining one, past maxRequestsPerConnection, does not count as usable), and
 *   opens another only when its peer's SETTINGS_MAX_CONCURRENT_STREAMS is reached. A proxy
 *   of mesh/local never needs that, so the limit never stops a connection, as in Envoy.
 * - `http.maxRequestsPerConnection`, `tcp.connectTimeout`, `http.idleTimeout`: the caller's
 *   SessionPool applies them to its connections.
 * - `http.maxRetries` (max_retries): concurrent retries; tryRetry() false means the retry is
 *   skipped (upstream_rq_retry_overflow).
 * An overflow is answered by the caller: 503, flag UO, header x-envoy-overloaded, never retried.
 */
import type { ConnectionPoolSettings } from "./destinations.js";

export interface Lease {
  release(): void;
}
export interface Overflow {
  overflow: true;
}

export const OVERFLOW: Overflow = Object.freeze({ overflow: true });

export class ConnectionPool {
  readonly maxRequestsPerConnection: number;
  readonly connectTimeoutMs: number;
  readonly idleTimeoutMs: number;
  #activeRequests = 0;
  #pendingRequests = 0;
  #activeRetries = 0;

  constructor(readonly settings: ConnectionPoolSettings) {
    this.maxRequestsPerConnection = settings.maxRequestsPerConnection;
    this.connectTimeoutMs = settings.connectTimeoutMs;
    this.idleTimeoutMs = settings.idleTimeoutMs;
  }

  get activeRequests(): number {
    return this.#activeRequests;
  }
  get pendingRequests(): number {
    return this.#pendingRequests;
  }
  get activeRetries(): number {
    return this.#activeRetries;
  }

  /** A lease for one request in progress, or an overflow (http2MaxRequests). */
  acquire(): Lease | Overflow {
    if (this.#activeRequests >= this.settings.http2MaxRequests) return OVERFLOW;
    this.#activeRequests++;
    return this.#once(() => this.#activeRequests--);
  }

  /**
   * A request starts waiting for its host's connection to be established: a lease to release
   * once the connection is up (or failed), or an overflow (http1MaxPendingRequests).
   */
  waitForConnection(): Lease | Overflow {
    if (this.#pendingRequests >= this.settings.http1MaxPendingRequests) return OVERFLOW;
    this.#pendingRequests++;
    return this.#once(() => this.#pendingRequests--);
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

  #once(release: () => void): Lease {
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        release();
      },
    };
  }
}

export const isOverflow = (value: unknown): value is Overflow =>
  typeof value === "object" && value !== null && (value as Overflow).overflow === true;
