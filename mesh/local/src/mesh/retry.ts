/**
 * Retries as Istio configures Envoy's router (pilot/pkg/networking/core/route/retry/retry.go)
 * and Envoy's RetryStateImpl decides them. `attempts` counts retries, not the first try;
 * `attempts: 0` disables retries; without a `retries` block Istio's default applies (2 retries on
 * connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes — no status codes,
 * so a 503 answer is not retried); `attempts` without `retryOn` keeps that default retryOn; bare
 * numbers in retryOn become retriable status codes. Envoy never retries an answer that carries
 * x-envoy-ratelimited (only envoy-ratelimited would); an answer with x-envoy-overloaded is
 * retried like any other (envoyproxy/envoy#10847) — only this proxy's own pool overflow never is.
 * gRPC tokens read grpc-status from response HEADERS
 * only (a trailers-only gRPC error); Connect errors are plain HTTP statuses.
 *
 * Not implemented (refused at load): retriable-headers, reset-before-request, envoy-ratelimited,
 * retryRemoteLocalities, retryIgnorePreviousHosts (mesh/local always prefers an endpoint not
 * tried yet, as Istio's default previous_hosts predicate does).
 */
import { durationMs, type HttpRetry } from "./config.js";

export interface RetryPolicy {
  /** Retries after the first try. */
  attempts: number;
  perTryTimeoutMs?: number;
  retryOn: Set<string>;
  retriableStatusCodes: Set<number>;
  /** Envoy's backoff base interval (25 ms unless `retries.backoff` says otherwise). */
  backoffBaseMs: number;
  retryRemoteLocalities?: never;
}

export type Outcome =
  | { kind: "response"; status: number; header(name: string): string | undefined }
  | {
      /** reset: the connection ended; remote-reset: the upstream reset the stream. */
      kind: "connect-failure" | "reset" | "remote-reset" | "refused-stream" | "per-try-timeout";
    };

export const DEFAULT_RETRY_ON =
  "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";
const DEFAULT_BACKOFF_MS = 25;

function parseRetryOn(text: string) {
  const retryOn = new Set<string>();
  const retriableStatusCodes = new Set<number>();
  for (const token of text.split(",").map((t) => t.trim())) {
    if (token === "") continue;
    if (/^\d+$/.test(token)) retriableStatusCodes.add(Number(token));
    else retryOn.add(token);
  }
  if (retriableStatusCodes.size) retryOn.add("retriable-status-codes");
  return { retryOn, retriableStatusCodes };
}

export function retryPolicy(retries: HttpRetry | undefined): RetryPolicy {
  if (!retries)
    return { attempts: 2, ...parseRetryOn(DEFAULT_RETRY_ON), backoffBaseMs: DEFAULT_BACKOFF_MS };
  if (retries.attempts <= 0) {
    return {
      attempts: 0,
      retryOn: new Set(),
      retriableStatusCodes: new Set(),
      backoffBaseMs: DEFAULT_BACKOFF_MS,
    };
  }
  return {
    attempts: retries.attempts,
    ...(retries.perTryTimeout && { perTryTimeoutMs: durationMs(retries.perTryTimeout) }),
    ...parseRetryOn(retries.retryOn || DEFAULT_RETRY_ON),
    backoffBaseMs: retries.backoff ? durationMs(retries.backoff) : DEFAULT_BACKOFF_MS,
  };
}

const GRPC_TOKENS: Record<string, number> = {
  cancelled: 1,
  "deadline-exceeded": 4,
  "resource-exhausted": 8,
  internal: 13,
  unavailable: 14,
};

/** Whether Envoy would retry this outcome of one try (the caller counts attempts and time). */
export function shouldRetry(policy: RetryPolicy, outcome: Outcome): boolean {
  if (policy.attempts <= 0) return false;
  const on = (token: string) => policy.retryOn.has(token);
  if (outcome.kind !== "response") {
    // Envoy: 5xx, gateway-error and reset retry every reset, connect failure and per-try
    // timeout (no response at all); connect-failure and refused-stream only their own (a
    // stream reset with another code than REFUSED_STREAM is neither).
    if (on("5xx") || on("gateway-error") || on("reset")) return true;
    if (outcome.kind === "connect-failure") return on("connect-failure");
    if (outcome.kind === "refused-stream") return on("refused-stream");
    return false;
  }
  if (outcome.header("x-envoy-ratelimited") !== undefined) return false;
  const { status } = outcome;
  if (on("5xx") && status >= 500 && status <= 599) return true;
  if (on("gateway-error") && (status === 502 || status === 503 || status === 504)) return true;
  if (on("retriable-4xx") && status === 409) return true;
  if (on("retriable-status-codes") && policy.retriableStatusCodes.has(status)) return true;
  const grpcStatus = outcome.header("grpc-status");
  if (grpcStatus !== undefined) {
    for (const [token, code] of Object.entries(GRPC_TOKENS)) {
      if (on(token) && Number(grpcStatus) === code) return true;
    }
  }
  return false;
}

/**
 * Envoy's JitteredExponentialBackOffStrategy before retry N (1 for the first retry): a random
 * time in [0, 2^(N−1) × base), the interval capped at 10 × base (Envoy's default max interval).
 * Envoy's router docs print (2^N − 1) × base; its code doubles from base.
 */
export function backoffMs(
  retryNumber: number,
  random: () => number = Math.random,
  baseMs = DEFAULT_BACKOFF_MS,
): number {
  const upper = Math.min(2 ** (retryNumber - 1) * baseMs, 10 * baseMs);
  return Math.floor(random() * upper);
}
