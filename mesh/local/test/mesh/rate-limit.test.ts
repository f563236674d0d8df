import { describe, expect, it } from "vitest";
import type { LocalRateLimit } from "../../src/mesh/config.js";
import { LocalRateLimiter, type RateLimitRequest } from "../../src/mesh/rate-limit.js";
import { configFrom, headers, repoConfig } from "./support.js";

const login = (
  clientAddress: string,
  path = "/shop.auth.v1.AuthService/Login",
): RateLimitRequest => ({
  route: "auth",
  path,
  method: "POST",
  clientAddress,
  header: headers(),
});

function limiter(limit: LocalRateLimit, random = () => 0) {
  let now = 0;
  return {
    limiter: new LocalRateLimiter(limit, () => now, random),
    advance: (ms: number) => (now += ms),
  };
}

const repoLimit = () => repoConfig().rateLimits[0]!;

describe("mesh/istio/rate-limit.yaml as loaded", () => {
  it("is the auth route's per-client limit", () => {
    expect(repoLimit()).toEqual({
      name: "auth-rate-limit",
      workloadLabels: { istio: "ingressgateway" },
      context: "GATEWAY",
      routeName: "auth",
      statPrefix: "http_local_rate_limiter",
      status: 429,
      tokenBucket: { maxTokens: 1000, tokensPerFill: 1000, fillIntervalMs: 1000 },
      enabledPercent: 100,
      enforcedPercent: 100,
      responseHeadersToAdd: [{ name: "x-local-rate-limit", value: "true" }],
      descriptors: [
        {
          entries: [{ key: "header_match", value: "auth-rpc" }, { key: "remote_address" }],
          tokenBucket: { maxTokens: 100, tokensPerFill: 20, fillIntervalMs: 10_000 },
        },
      ],
      rateLimits: [
        [
          {
            header_value_match: {
              descriptor_value: "auth-rpc",
              headers: [{ name: ":path", string_match: { prefix: "/shop.auth.v1.AuthService/" } }],
            },
          },
          { remote_address: {} },
        ],
      ],
      alwaysConsumeDefaultTokenBucket: false,
      maxDynamicDescriptors: 10_000,
    });
  });
});

describe("LocalRateLimiter", () => {
  it("answers 429 local_rate_limited with the configured headers once a client's burst is spent", () => {
    const { limiter: l } = limiter(repoLimit());
    for (let i = 0; i < 100; i++) expect(l.check(login("10.0.0.1")).limited).toBe(false);
    expect(l.check(login("10.0.0.1"))).toEqual({
      limited: true,
      status: 429,
      body: "local_rate_limited",
      headers: { "x-local-rate-limit": "true", "x-envoy-ratelimited": "true" },
    });
  });

  it("keeps one bucket per client address", () => {
    const { limiter: l } = limiter(repoLimit());
    for (let i = 0; i < 100; i++) l.check(login("10.0.0.1"));
    expect(l.check(login("10.0.0.1")).limited).toBe(true);
    expect(l.check(login("10.0.0.2")).limited).toBe(false);
  });

  it("refills tokens_per_fill per fill_interval, continuously", () => {
    const { limiter: l, advance } = limiter(repoLimit());
    for (let i = 0; i < 100; i++) l.check(login("10.0.0.1"));
    advance(499); // 0.998 tokens
    expect(l.check(login("10.0.0.1")).limited).toBe(true);
    advance(1);
    expect(l.check(login("10.0.0.1")).limited).toBe(false);
    advance(10_000); // 20 more
    for (let i = 0; i < 20; i++) expect(l.check(login("10.0.0.1")).limited).toBe(false);
    expect(l.check(login("10.0.0.1")).limited).toBe(true);
  });

  it("leaves other routes and non-RPC paths of the route to the shared bucket", () => {
    const { limiter: l } = limiter(repoLimit());
    for (let i = 0; i < 100; i++) l.check(login("10.0.0.1"));
    expect(l.check({ ...login("10.0.0.1"), route: "order" }).limited).toBe(false);
    // /.well-known/ produces no descriptor: it draws on the route's 1000-token bucket.
    for (let i = 0; i < 1000; i++)
      expect(l.check(login("10.0.0.1", "/.well-known/jwks.json")).limited).toBe(false);
    expect(l.check(login("10.0.0.1", "/.well-known/jwks.json")).limited).toBe(true);
    // The RPCs did not draw on it (always_consume_default_token_bucket: false).
    expect(l.check(login("10.0.0.3")).limited).toBe(false);
  });

  it("drops the least recently used client bucket beyond max_dynamic_descriptors", () => {
    const { limiter: l } = limiter({ ...repoLimit(), maxDynamicDescriptors: 2 });
    for (let i = 0; i < 100; i++) l.check(login("10.0.0.1"));
    l.check(login("10.0.0.2"));
    l.check(login("10.0.0.3")); // evicts 10.0.0.1's bucket
    expect(l.check(login("10.0.0.1")).limited).toBe(false);
  });

  it("honours filter_enabled and filter_enforced shares", () => {
    const tight = { ...repoLimit(), enabledPercent: 50, enforcedPercent: 50 };
    const sequence = [0.6]; // not enabled: no check at all
    const off = new LocalRateLimiter(
      tight,
      () => 0,
      () => sequence.shift() ?? 0,
    );
    expect(off.check(login("10.0.0.1")).limited).toBe(false);
    let roll = 0;
    const shadow = new LocalRateLimiter(
      { ...tight, enabledPercent: 100 },
      () => 0,
      () => roll,
    );
    for (let i = 0; i < 100; i++) shadow.check(login("10.0.0.1"));
    roll = 0.7; // out of tokens but not enforced for this request
    expect(shadow.check(login("10.0.0.1")).limited).toBe(false);
    roll = 0.2;
    expect(shadow.check(login("10.0.0.1")).limited).toBe(true);
  });

  it("limits a static descriptor and the route bucket with always_consume_default_token_bucket", () => {
    const config = configFrom(`
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: { name: limit, namespace: istio-system }
spec:
  workloadSelector: { labels: { istio: ingressgateway } }
  configPatches:
    - applyTo: HTTP_FILTER
      match: { context: GATEWAY, listener: { filterChain: { filter: { name: envoy.filters.network.http_connection_manager } } } }
      patch:
        operation: INSERT_BEFORE
        value:
          name: envoy.filters.http.local_ratelimit
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
            stat_prefix: rl
    - applyTo: HTTP_ROUTE
      match: { context: GATEWAY, routeConfiguration: { vhost: { route: { name: order } } } }
      patch:
        operation: MERGE
        value:
          route:
            rate_limits: [{ actions: [{ request_headers: { header_name: x-tenant, descriptor_key: tenant } }] }]
          typed_per_filter_config:
            envoy.filters.http.local_ratelimit:
              "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
              stat_prefix: rl
              status: { code: 503 }
              token_bucket: { max_tokens: 3, fill_interval: 60s }
              filter_enabled: { runtime_key: e, default_value: { numerator: 100 } }
              filter_enforced: { runtime_key: f, default_value: { numerator: 1000000, denominator: MILLION } }
              descriptors:
                - entries: [{ key: tenant, value: acme }]
                  token_bucket: { max_tokens: 1, fill_interval: 60s }
`);
    const limit = config.rateLimits[0]!;
    expect(limit.tokenBucket).toEqual({ maxTokens: 3, tokensPerFill: 1, fillIntervalMs: 60_000 });
    const l = new LocalRateLimiter(
      limit,
      () => 0,
      () => 0,
    );
    const order = (tenant?: string): RateLimitRequest => ({
      route: "order",
      path: "/shop.order.v1.OrderService/PlaceOrder",
      clientAddress: "10.0.0.1",
      header: headers(tenant ? { "x-tenant": tenant } : {}),
    });
    expect(l.check(order("acme")).limited).toBe(false); // acme bucket 0, route bucket 2
    expect(l.check(order("acme"))).toMatchObject({ limited: true, status: 503 });
    expect(l.check(order("other")).limited).toBe(false); // route bucket 1
    expect(l.check(order()).limited).toBe(false); // no x-tenant: no descriptor; route bucket 0
    expect(l.check(order()).limited).toBe(true);
  });

  it("refuses an EnvoyFilter whose listener-level config sets limits, or that names an unknown route", () => {
    const filter = (listener: string, route = "auth") => `
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: { name: limit, namespace: istio-system }
spec:
  workloadSelector: { labels: { istio: ingressgateway } }
  configPatches:
    - applyTo: HTTP_FILTER
      match: { context: GATEWAY, listener: { filterChain: { filter: { name: envoy.filters.network.http_connection_manager } } } }
      patch:
        operation: INSERT_BEFORE
        value:
          name: envoy.filters.http.local_ratelimit
          typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit, stat_prefix: rl${listener} }
    - applyTo: HTTP_ROUTE
      match: { context: GATEWAY, routeConfiguration: { vhost: { route: { name: ${route} } } } }
      patch:
        operation: MERGE
        value:
          typed_per_filter_config:
            envoy.filters.http.local_ratelimit: { "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit, stat_prefix: rl, token_bucket: { max_tokens: 1, fill_interval: 10ms } }
`;
    expect(() =>
      configFrom(
        filter(", token_bucket: { max_tokens: 1, fill_interval: 1s }").replace("10ms", "1s"),
      ),
    ).toThrow(
      /EnvoyFilter limit: spec\.configPatches\.0\.patch\.value\.typed_config: token_bucket: not implemented by mesh\/local at listener level/,
    );
    expect(() => configFrom(filter(""))).toThrow(/fill_interval: at least 50ms/);
    expect(() => configFrom(filter("", "nowhere").replace("10ms", "1s"))).toThrow(
      /spec\.configPatches\.1\.match\.routeConfiguration\.vhost\.route\.name: no ingress route nowhere/,
    );
    expect(() =>
      configFrom(
        filter("").replace("10ms", "1s").replace("namespace: istio-system", "namespace: shop"),
      ),
    ).toThrow(
      /metadata\.namespace: an EnvoyFilter for the ingress gateway must be in istio-system/,
    );
  });
});
