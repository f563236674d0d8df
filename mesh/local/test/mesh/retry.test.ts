import { describe, expect, it } from "vitest";
import { RETRY_ON_TOKENS } from "../../src/mesh/config.js";
import {
  backoffMs,
  DEFAULT_RETRY_ON,
  type Outcome,
  retryPolicy,
  shouldRetry,
} from "../../src/mesh/retry.js";
import { headers, repoConfig } from "./support.js";

const answer = (status: number, values: Record<string, string> = {}): Outcome => ({
  kind: "response",
  status,
  header: headers(values),
});
const policy = (retryOn: string) => retryPolicy({ attempts: 2, retryOn });

describe("retryPolicy", () => {
  it("is Istio's default without a retries block: 2 retries, 503 not among them", () => {
    const p = retryPolicy(undefined);
    expect(p.attempts).toBe(2);
    expect([...p.retryOn].sort()).toEqual(
      [
        "cancelled",
        "connect-failure",
        "refused-stream",
        "retriable-status-codes",
        "unavailable",
      ].sort(),
    );
    expect(p.retriableStatusCodes.size).toBe(0);
    expect(p.perTryTimeoutMs).toBeUndefined();
    expect(shouldRetry(p, answer(503))).toBe(false);
    expect(shouldRetry(p, { kind: "connect-failure" })).toBe(true);
    expect(shouldRetry(p, { kind: "per-try-timeout" })).toBe(false);
  });

  it("keeps the default retryOn when only attempts is written", () => {
    const p = retryPolicy({ attempts: 5 });
    expect(p.attempts).toBe(5);
    expect(p.retryOn).toEqual(retryPolicy(undefined).retryOn);
  });

  it("attempts: 0 disables retries", () => {
    const p = retryPolicy({ attempts: 0, retryOn: "5xx" });
    expect(p.attempts).toBe(0);
    expect(shouldRetry(p, answer(503))).toBe(false);
    expect(shouldRetry(p, { kind: "reset" })).toBe(false);
  });

  it("turns bare numbers into retriable status codes", () => {
    const p = policy("connect-failure,503,409");
    expect(p.retriableStatusCodes).toEqual(new Set([503, 409]));
    expect(p.retryOn.has("retriable-status-codes")).toBe(true);
    expect(shouldRetry(p, answer(503))).toBe(true);
    expect(shouldRetry(p, answer(502))).toBe(false);
  });

  it("reads perTryTimeout and backoff durations", () => {
    const p = retryPolicy({ attempts: 1, perTryTimeout: "2s", backoff: "100ms" });
    expect(p.perTryTimeoutMs).toBe(2000);
    expect(p.backoffBaseMs).toBe(100);
  });

  it("takes the repository's retries as written", () => {
    const route = repoConfig().virtualServices.find((v) => v.metadata.name === "payment")!.spec
      .http[0]!;
    const p = retryPolicy(route.retries);
    expect(p.attempts).toBe(2);
    expect(p.perTryTimeoutMs).toBe(3000);
    expect([...p.retryOn]).toEqual([
      "connect-failure",
      "refused-stream",
      "reset",
      "gateway-error",
      "unavailable",
    ]);
  });
});

describe("shouldRetry: every retryOn token", () => {
  it("5xx: any 5xx and no response at all", () => {
    const p = policy("5xx");
    expect(shouldRetry(p, answer(500))).toBe(true);
    expect(shouldRetry(p, answer(599))).toBe(true);
    expect(shouldRetry(p, answer(429))).toBe(false);
    for (const kind of [
      "reset",
      "remote-reset",
      "connect-failure",
      "refused-stream",
      "per-try-timeout",
    ] as const) {
      expect(shouldRetry(p, { kind })).toBe(true);
    }
  });

  it("gateway-error: 502, 503, 504, and failures without a response", () => {
    const p = policy("gateway-error");
    expect([500, 502, 503, 504].map((s) => shouldRetry(p, answer(s)))).toEqual([
      false,
      true,
      true,
      true,
    ]);
    expect(shouldRetry(p, { kind: "per-try-timeout" })).toBe(true);
    expect(shouldRetry(p, { kind: "reset" })).toBe(true);
  });

  it("reset: every reset and per-try timeout, no answered status", () => {
    const p = policy("reset");
    expect(shouldRetry(p, { kind: "reset" })).toBe(true);
    expect(shouldRetry(p, { kind: "per-try-timeout" })).toBe(true);
    expect(shouldRetry(p, answer(503))).toBe(false);
  });

  it("connect-failure and refused-stream: only their own failure, never a per-try timeout", () => {
    const connect = policy("connect-failure");
    expect(shouldRetry(connect, { kind: "connect-failure" })).toBe(true);
    expect(shouldRetry(connect, { kind: "reset" })).toBe(false);
    expect(shouldRetry(connect, { kind: "per-try-timeout" })).toBe(false);
    const refused = policy("refused-stream");
    expect(shouldRetry(refused, { kind: "refused-stream" })).toBe(true);
    expect(shouldRetry(refused, { kind: "connect-failure" })).toBe(false);
    // A RST_STREAM with another code (INTERNAL_ERROR, CANCEL…) is a plain remote reset.
    expect(shouldRetry(refused, { kind: "remote-reset" })).toBe(false);
    expect(shouldRetry(policy(DEFAULT_RETRY_ON), { kind: "remote-reset" })).toBe(false);
    expect(shouldRetry(policy("reset"), { kind: "remote-reset" })).toBe(true);
  });

  it("retriable-4xx: 409 only", () => {
    const p = policy("retriable-4xx");
    expect(shouldRetry(p, answer(409))).toBe(true);
    expect(shouldRetry(p, answer(400))).toBe(false);
  });

  it("gRPC tokens read grpc-status from response headers", () => {
    const cases: [string, number][] = [
      ["cancelled", 1],
      ["deadline-exceeded", 4],
      ["resource-exhausted", 8],
      ["internal", 13],
      ["unavailable", 14],
    ];
    for (const [token, code] of cases) {
      const p = policy(token);
      expect(shouldRetry(p, answer(200, { "grpc-status": String(code) }))).toBe(true);
      expect(shouldRetry(p, answer(200, { "grpc-status": "0" }))).toBe(false);
      // A Connect error is a plain status: gRPC tokens alone never retry it.
      expect(shouldRetry(p, answer(503))).toBe(false);
    }
  });

  it("never retries rate-limit answers, but retries an upstream's overload answer", () => {
    const p = policy("5xx,gateway-error,retriable-4xx,503,429");
    // envoyproxy/envoy#10847: only x-envoy-ratelimited is special in wouldRetryFromHeaders.
    expect(shouldRetry(p, answer(503, { "x-envoy-overloaded": "true" }))).toBe(true);
    expect(shouldRetry(p, answer(429, { "x-envoy-ratelimited": "true" }))).toBe(false);
    expect(shouldRetry(p, answer(503))).toBe(true);
  });

  it("gives every token mesh/local accepts an effect: a failure it retries that no other token's policy does", () => {
    // What each token alone retries (retriable-status-codes with a status named beside it).
    const witness: Record<(typeof RETRY_ON_TOKENS)[number], [string, Outcome]> = {
      "5xx": ["5xx", answer(500)],
      "gateway-error": ["gateway-error", answer(504)],
      reset: ["reset", { kind: "remote-reset" }],
      "connect-failure": ["connect-failure", { kind: "connect-failure" }],
      "refused-stream": ["refused-stream", { kind: "refused-stream" }],
      "retriable-4xx": ["retriable-4xx", answer(409)],
      "retriable-status-codes": ["retriable-status-codes,418", answer(418)],
      cancelled: ["cancelled", answer(200, { "grpc-status": "1" })],
      "deadline-exceeded": ["deadline-exceeded", answer(200, { "grpc-status": "4" })],
      internal: ["internal", answer(200, { "grpc-status": "13" })],
      "resource-exhausted": ["resource-exhausted", answer(200, { "grpc-status": "8" })],
      unavailable: ["unavailable", answer(200, { "grpc-status": "14" })],
    };
    expect(Object.keys(witness).sort()).toEqual([...RETRY_ON_TOKENS].sort());
    const broad = new Set(["5xx", "gateway-error", "reset"]);
    for (const [token, [retryOn, outcome]] of Object.entries(witness)) {
      expect(shouldRetry(policy(retryOn), outcome), token).toBe(true);
      for (const other of RETRY_ON_TOKENS) {
        // 5xx, gateway-error and reset each cover failures of the narrower tokens.
        if (other === token || broad.has(other)) continue;
        expect(shouldRetry(policy(other), outcome), `${other} on ${token}'s failure`).toBe(false);
      }
    }
  });
});

describe("backoffMs", () => {
  it("draws as Envoy's JitteredExponentialBackOffStrategy: [0,25), [0,50), [0,100), [0,200), then [0,250) ms", () => {
    expect(backoffMs(1, () => 0)).toBe(0);
    expect(backoffMs(1, () => 0.999)).toBe(24);
    expect(backoffMs(2, () => 0.999)).toBe(49);
    expect(backoffMs(3, () => 0.999)).toBe(99);
    expect(backoffMs(4, () => 0.999)).toBe(199);
    expect(backoffMs(5, () => 0.999)).toBe(249);
    expect(backoffMs(10, () => 0.5)).toBe(125);
    expect(backoffMs(1, () => 0.999, 100)).toBe(99);
  });
});
