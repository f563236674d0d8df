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
  it("queues HTTP/1 requests beyond maxConnections, up to http1MaxPendingRequests, then overflows", async () => {
    const p = pool({ maxConnections: 1, http1MaxPendingRequests: 1 });
    const first = await (p.acquire("http1") as Promise<Lease>);
    const queued = p.acquire("http1");
    expect(isOverflow(queued)).toBe(false);
    expect(p.pendingRequests).toBe(1);
    expect(isOverflow(p.acquire("http1"))).toBe(true);
    first.release();
    const second = await (queued as Promise<Lease>);
    expect(p.activeRequests).toBe(1);
    expect(p.pendingRequests).toBe(0);
    second.release();
    second.release(); // idempotent
    expect(p.activeRequests).toBe(0);
  });

  it("istio.io's circuit-breaking task: maxConnections 1 + http1MaxPendingRequests 1 overflow the third concurrent request", () => {
    const p = pool({ maxConnections: 1, http1MaxPendingRequests: 1 });
    const results = [p.acquire("http1"), p.acquire("http1"), p.acquire("http1")];
    expect(results.map(isOverflow)).toEqual([false, false, true]);
  });

  it("takes a queued request out when its signal aborts (the route timeout)", async () => {
    const p = pool({ maxConnections: 1, http1MaxPendingRequests: 5 });
    const first = await (p.acquire("http1") as Promise<Lease>);
    const controller = new AbortController();
    const queued = p.acquire("http1", controller.signal) as Promise<Lease>;
    controller.abort(new Error("route timeout"));
    await expect(queued).rejects.toThrow("route timeout");
    expect(p.pendingRequests).toBe(0);
    first.release();
    expect(p.activeRequests).toBe(0);
  });

  it("bounds concurrent requests with http2MaxRequests (HTTP/2 and HTTP/1 alike)", async () => {
    const p = pool({ http2MaxRequests: 2 });
    const leases = [p.acquire("http2"), p.acquire("http2")];
    expect(leases.some(isOverflow)).toBe(false);
    expect(isOverflow(p.acquire("http2"))).toBe(true);
    expect(isOverflow(p.acquire("http1"))).toBe(true);
    (await (leases[0] as Promise<Lease>)).release();
    expect(isOverflow(p.acquire("http2"))).toBe(false);
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
