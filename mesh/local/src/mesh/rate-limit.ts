/**
 * Envoy's HTTP local rate limit (envoy.filters.http.local_ratelimit) for one route, configured by
 * the EnvoyFilter shape of Istio's task "Enabling Rate Limits using Envoy" (config.ts). Per
 * request: filter_enabled's share is checked at all; the route's rate_limits actions build
 * request descriptors (remote_address, generic_key, request_headers, header_value_match; an
 * action that produces nothing drops its descriptor); each configured descriptor that matches
 * one (an entry without a value matches any value and keeps one bucket per distinct value,
 * Envoy's dynamic descriptors, in an LRU of max_dynamic_descriptors) takes a token from its
 * bucket; the route's own token_bucket is drawn on when no descriptor matched or when
 * always_consume_default_token_bucket (default true). Buckets refill continuously at
 * tokens_per_fill per fill_interval up to max_tokens, as Envoy's timer-less bucket does. Out of
 * tokens and within filter_enforced's share: 429 "local_rate_limited" with
 * response_headers_to_add and x-envoy-ratelimited: true (flag RL); never retried by callers.
 */
import type { LocalRateLimit, RateLimitAction, TokenBucket } from "./config.js";

export interface RateLimitRequest {
  /** The name of the route the request took (the ingress route's `name`). */
  route: string | undefined;
  path: string;
  method?: string;
  authority?: string;
  clientAddress: string | undefined;
  header(name: string): string | undefined;
}

export type RateLimitDecision =
  | { limited: false; headers: Record<string, string> }
  | { limited: true; status: number; body: "local_rate_limited"; headers: Record<string, string> };

export const RATE_LIMITED_BODY = "local_rate_limited";

class Bucket {
  #tokens: number;
  #at: number;
  constructor(
    readonly config: TokenBucket,
    now: number,
  ) {
    this.#tokens = config.maxTokens;
    this.#at = now;
  }
  consume(now: number): boolean {
    const refill = ((now - this.#at) / this.config.fillIntervalMs) * this.config.tokensPerFill;
    this.#tokens = Math.min(this.config.maxTokens, this.#tokens + refill);
    this.#at = now;
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }
}

type Entry = { key: string; value: string };

function pseudoHeader(name: string, request: RateLimitRequest): string | undefined {
  switch (name) {
    case ":path":
      return request.path;
    case ":method":
      return request.method;
    case ":authority":
      return request.authority ?? request.header("host");
    default:
      return request.header(name.toLowerCase());
  }
}

/** One action's descriptor entry, null when the action fails (the descriptor is dropped). */
function entryOf(action: RateLimitAction, request: RateLimitRequest): Entry | undefined | null {
  if ("remote_address" in action) {
    return request.clientAddress ? { key: "remote_address", value: request.clientAddress } : null;
  }
  if ("generic_key" in action) {
    const { descriptor_key = "generic_key", descriptor_value } = action.generic_key;
    return { key: descriptor_key, value: descriptor_value };
  }
  if ("request_headers" in action) {
    const { header_name, descriptor_key, skip_if_absent } = action.request_headers;
    const value = pseudoHeader(header_name, request);
    if (value === undefined) return skip_if_absent ? undefined : null;
    return { key: descriptor_key, value };
  }
  const match = action.header_value_match;
  const matched = match.headers.every((h) => {
    const value = pseudoHeader(h.name, request);
    if (value === undefined) return false;
    const s = h.string_match;
    if ("exact" in s) return value === s.exact;
    if ("prefix" in s) return value.startsWith(s.prefix);
    return value.endsWith(s.suffix);
  });
  if (matched !== (match.expect_match ?? true)) return null;
  return { key: match.descriptor_key ?? "header_match", value: match.descriptor_value };
}

export class LocalRateLimiter {
  readonly #default: Bucket | undefined;
  /** Per configured descriptor: its buckets by concrete values (one for a static descriptor). */
  readonly #buckets: Map<string, Bucket>[];

  constructor(
    readonly limit: LocalRateLimit,
    readonly now: () => number = () => Date.now(),
    readonly random: () => number = Math.random,
  ) {
    this.#default = limit.tokenBucket && new Bucket(limit.tokenBucket, now());
    this.#buckets = limit.descriptors.map(() => new Map());
  }

  check(request: RateLimitRequest): RateLimitDecision {
    const pass: RateLimitDecision = { limited: false, headers: {} };
    if (request.route !== this.limit.routeName) return pass;
    if (!(this.random() * 100 < this.limit.enabledPercent)) return pass;
    const now = this.now();
    const matched: Bucket[] = [];
    for (const descriptor of this.#requestDescriptors(request)) {
      const index = this.limit.descriptors.findIndex(
        (configured) =>
          configured.entries.length === descriptor.length &&
          configured.entries.every(
            (e, i) =>
              e.key === descriptor[i]!.key &&
              (e.value === undefined || e.value === descriptor[i]!.value),
          ),
      );
      if (index >= 0) matched.push(this.#bucketFor(index, descriptor, now));
    }
    // Envoy stops at the first bucket out of tokens; the route's bucket comes last.
    let allowed = matched.every((bucket) => bucket.consume(now));
    const drawsDefault = matched.length === 0 || this.limit.alwaysConsumeDefaultTokenBucket;
    if (allowed && this.#default && drawsDefault) allowed = this.#default.consume(now);
    if (allowed || !(this.random() * 100 < this.limit.enforcedPercent)) return pass;
    const headers: Record<string, string> = {};
    for (const { name, value } of this.limit.responseHeadersToAdd) headers[name] = value;
    headers["x-envoy-ratelimited"] = "true";
    return { limited: true, status: this.limit.status, body: RATE_LIMITED_BODY, headers };
  }

  #requestDescriptors(request: RateLimitRequest): Entry[][] {
    const descriptors: Entry[][] = [];
    for (const actions of this.limit.rateLimits) {
      const entries: Entry[] = [];
      let dropped = false;
      for (const action of actions) {
        const entry = entryOf(action, request);
        if (entry === null) {
          dropped = true;
          break;
        }
        if (entry) entries.push(entry);
      }
      if (!dropped && entries.length) descriptors.push(entries);
    }
    return descriptors;
  }

  #bucketFor(index: number, descriptor: Entry[], now: number): Bucket {
    const buckets = this.#buckets[index]!;
    const key = JSON.stringify(descriptor.map((e) => e.value));
    let bucket = buckets.get(key);
    if (bucket) {
      buckets.delete(key); // most recently used last
    } else {
      bucket = new Bucket(this.limit.descriptors[index]!.tokenBucket, now);
      if (buckets.size >= this.limit.maxDynamicDescriptors) {
        buckets.delete(buckets.keys().next().value!);
      }
    }
    buckets.set(key, bucket);
    return bucket;
  }
}
