import { describe, expect, it } from "vitest";
import type { OutlierPolicy } from "../../src/mesh/destinations.js";
import { OutlierDetector } from "../../src/mesh/outlier.js";

const policy = (overrides: Partial<OutlierPolicy> = {}): OutlierPolicy => ({
  consecutive5xxErrors: 5,
  intervalMs: 10_000,
  baseEjectionTimeMs: 30_000,
  maxEjectionPercent: 50,
  maxEjectionTimeMs: 300_000,
  ...overrides,
});

function detector(overrides: Partial<OutlierPolicy> = {}, ids = ["a", "b"]) {
  let now = 1_000_000;
  const d = new OutlierDetector(policy(overrides), () => now);
  d.healthy(ids);
  return { d, advance: (ms: number) => (now += ms) };
}

const fail = (d: OutlierDetector, id: string, times: number, status = 503) => {
  for (let i = 0; i < times; i++) d.record(id, { status });
};

describe("OutlierDetector", () => {
  it("ejects after consecutive5xxErrors 5xx answers, counting local-origin failures", () => {
    const { d } = detector();
    fail(d, "a", 3);
    d.record("a", { localOriginFailure: true });
    expect(d.isEjected("a")).toBe(false);
    d.record("a", { status: 500 });
    expect(d.isEjected("a")).toBe(true);
    expect(d.healthy(["a", "b"])).toEqual(["b"]);
  });

  it("forgets an endpoint that left the cluster: back (a restarted pod), it starts healthy", () => {
    const { d } = detector({ maxEjectionPercent: 100 }, ["a#1"]);
    fail(d, "a#1", 5);
    // The only endpoint, with maxEjectionPercent 100; the panic threshold is 0.
    expect(d.healthy(["a#1"])).toEqual([]);
    // Unready, it left the endpoints; ready again, it is a new host.
    expect(d.healthy([])).toEqual([]);
    expect(d.healthy(["a#2"])).toEqual(["a#2"]);
    expect(d.ejections("a#1")).toBe(0);
  });

  it("with splitExternalLocalOriginErrors, ejects on local-origin failures and not on answers", () => {
    const { d } = detector({
      consecutive5xxErrors: 0,
      splitExternalLocalOriginErrors: true,
      consecutiveLocalOriginFailures: 3,
    });
    // A 503 answer (a dependency down behind a healthy instance) never ejects.
    fail(d, "a", 20, 503);
    expect(d.isEjected("a")).toBe(false);
    d.record("a", { localOriginFailure: true });
    d.record("a", { localOriginFailure: true });
    d.record("a", { localOriginSuccess: true }); // a request got a connection
    d.record("a", { localOriginFailure: true });
    d.record("a", { localOriginFailure: true });
    expect(d.isEjected("a")).toBe(false);
    // An answer is no local-origin success of its own (Envoy's putHttpResponseCode).
    d.record("a", { status: 200 });
    d.record("a", { localOriginFailure: true });
    expect(d.isEjected("a")).toBe(true);
  });

  it("with splitExternalLocalOriginErrors, resets or timeouts after the connection was up never add up", () => {
    const { d } = detector({
      consecutive5xxErrors: 0,
      splitExternalLocalOriginErrors: true,
      consecutiveLocalOriginFailures: 2,
    });
    // Each request: onPoolReady (success), then the reset or per-try timeout (failure).
    for (let i = 0; i < 10; i++) {
      d.record("a", { localOriginSuccess: true });
      d.record("a", { localOriginFailure: true });
    }
    expect(d.isEjected("a")).toBe(false);
  });

  it("without the split, a local-origin success counts for nothing", () => {
    const { d } = detector();
    fail(d, "a", 4);
    d.record("a", { localOriginSuccess: true });
    fail(d, "a", 1);
    expect(d.isEjected("a")).toBe(true);
  });

  it("resets the count on a success", () => {
    const { d } = detector();
    fail(d, "a", 4);
    d.record("a", { status: 200 });
    fail(d, "a", 4);
    expect(d.isEjected("a")).toBe(false);
  });

  it("counts gateway errors only when consecutiveGatewayErrors is set", () => {
    const off = detector({ consecutive5xxErrors: 0 });
    fail(off.d, "a", 20, 502);
    expect(off.d.isEjected("a")).toBe(false);
    const on = detector({ consecutive5xxErrors: 0, consecutiveGatewayErrors: 2 });
    on.d.record("a", { status: 500 });
    on.d.record("a", { status: 504 });
    expect(on.d.isEjected("a")).toBe(false); // the 500 broke the run
    on.d.record("a", { status: 503 });
    expect(on.d.isEjected("a")).toBe(true);
  });

  it("ends an ejection at the first interval tick after baseEjectionTime × ejections", () => {
    const { d, advance } = detector(); // ticks at t0 + 10 s, + 20 s, …
    advance(5_000);
    fail(d, "a", 5); // ejected at t0 + 5 s for 30 s
    advance(29_999);
    expect(d.isEjected("a")).toBe(true);
    advance(1); // t0 + 35 s is no tick: the tick at t0 + 40 s ends it
    expect(d.isEjected("a")).toBe(true);
    advance(5_000);
    expect(d.isEjected("a")).toBe(false);
    advance(5_000);
    fail(d, "a", 5); // ejected again at t0 + 45 s, now for 2 × 30 s
    advance(60_000); // t0 + 105 s: the tick at t0 + 100 s is too early
    expect(d.isEjected("a")).toBe(true);
    advance(10_000); // the tick at t0 + 110 s ends it
    expect(d.isEjected("a")).toBe(false);
    expect(d.ejections("a")).toBe(2);
  });

  it("lets the ejection count decay per healthy interval, and caps the ejection time at 300 s", () => {
    const { d, advance } = detector({ baseEjectionTimeMs: 200_000 });
    fail(d, "a", 5);
    advance(200_000);
    expect(d.isEjected("a")).toBe(false);
    fail(d, "a", 5); // 2 × 200 s = 400 s, capped at 300 s
    expect(d.ejections("a")).toBe(2);
    advance(290_000);
    expect(d.isEjected("a")).toBe(true);
    advance(10_000);
    expect(d.isEjected("a")).toBe(false);
    fail(d, "a", 5); // the multiplier stays at 2 once base × 2 reaches the cap
    expect(d.ejections("a")).toBe(2);
    advance(300_000);
    expect(d.isEjected("a")).toBe(false);
    advance(10_000);
    expect(d.ejections("a")).toBe(1); // a healthy interval takes one off
    advance(10_000);
    expect(d.ejections("a")).toBe(0);
  });

  it("ejects only while (ejected + 1) / endpoints stays within maxEjectionPercent, the first one too", () => {
    // Envoy ≥ 1.28 without always_eject_one_host (Istio never sets it).
    const { d } = detector({ maxEjectionPercent: 10 }, ["a", "b", "c"]);
    fail(d, "a", 5);
    expect(d.isEjected("a")).toBe(false); // 33 % > 10 %
    const single = detector({ maxEjectionPercent: 50 }, ["a"]);
    fail(single.d, "a", 5);
    expect(single.d.isEjected("a")).toBe(false); // mesh/istio's 50 % with one replica: never
    const two = detector({ maxEjectionPercent: 50 }, ["a", "b"]);
    fail(two.d, "a", 5);
    expect(two.d.isEjected("a")).toBe(true); // 1 of 2 is 50 %
    fail(two.d, "b", 5);
    expect(two.d.isEjected("b")).toBe(false);
    const half = detector({ maxEjectionPercent: 50 }, ["a", "b", "c", "d"]);
    fail(half.d, "a", 5);
    fail(half.d, "b", 5);
    fail(half.d, "c", 5);
    expect(half.d.healthy(["a", "b", "c", "d"])).toEqual(["c", "d"]);
  });

  it("gives [] when every endpoint is ejected (Istio's panic threshold 0: 503 UH)", () => {
    const { d } = detector({ maxEjectionPercent: 100 }, ["a"]);
    fail(d, "a", 5);
    expect(d.healthy(["a"])).toEqual([]);
  });
});
