import { describe, expect, it } from "vitest";
import { ConnectionPool, isOverflow, type Lease } from "../../src/mesh/connection-pool.js";
import { trafficPolicyFor } from "../../src/mesh/destinations.js";
import { configFrom, repoConfig } from "./support.js";

const pool = (settings: Partial<ConstructorParameters<typeof ConnectionPool>[0]> = {}) =>
  new ConnectionPool({
    ...trafficPolicyFor(configFrom(""), "payment").connectionPool,
    ...settings,
  });

describe("ConnectionPool", () => {
  it("bounds requests in progress with http2MaxRequests", () => {
    const p = pool({ http2MaxRequests: 2 });
    const leases = [p.acquire(), p.acquire()];
    expect(leases.some(isOverflow)).toBe(false);
    expect(isOverflow(p.acquire())).toBe(true);
    (leases[0] as Lease).release();
    (leases[0] as Lease).release(); // idempotent
    expect(p.activeRequests).toBe(1);
    expect(isOverflow(p.acquire())).toBe(false);
  });

  it("bounds requests waiting for a connection with http1MaxPendingRequests (Envoy's max_pending_requests)", () => {
    const p = pool({ http1MaxPendingRequests: 1 });
    const waiting = p.waitForConnection();
    expect(isOverflow(waiting)).toBe(false);
    expect(p.pendingRequests).toBe(1);
    expect(isOverflow(p.waitForConnection())).toBe(true);
    (waiting as Lease).release(); // the connection is up
    expect(p.pendingRequests).toBe(0);
    expect(isOverflow(p.waitForConnection())).toBe(false);
  });

  it("has Istio's defaults: no limit that a shop on one machine could reach", () => {
    const { settings } = pool();
    expect([
      settings.http2MaxRequests,
      settings.http1MaxPendingRequests,
      settings.maxConnections,
    ]).toEqual([2 ** 32 - 1, 2 ** 32 - 1, 2 ** 32 - 1]);
  });

  it("bounds concurrent retries with maxRetries", () => {
    const p = pool({ maxRetries: 1 });
    expect(p.tryRetry()).toBe(true);
    expect(p.tryRetry()).toBe(false);
    p.retryFinished();
    expect(p.tryRetry()).toBe(true);
  });

  it("reports the per-connection settings for the caller", () => {
    const p = new ConnectionPool(trafficPolicyFor(repoConfig(), "auth").connectionPool);
    expect([p.connectTimeoutMs, p.idleTimeoutMs, p.maxRequestsPerConnection]).toEqual([
      2000, 60_000, 0,
    ]);
    expect(pool().settings.maxRetries).toBe(2 ** 32 - 1);
  });
});
