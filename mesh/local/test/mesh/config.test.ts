import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { durationMs, MESH_TRACE_SAMPLING_PERCENT, MeshConfigError } from "../../src/mesh/config.js";
import { parseIstioDuration } from "../../src/mesh/duration.js";
import { configFrom, repoConfig, repoMesh, variantConfig, variantFiles } from "./support.js";

const vs = (spec: string, name = "payment") => `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: ${name}, namespace: shop }
spec:
${spec}`;

const dr = (spec: string) => `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: payment, namespace: shop }
spec:
${spec}`;

describe("loading mesh/istio", () => {
  it("reads every kind in the repository's top level", () => {
    const config = repoConfig();
    expect(config.namespace).toBe("shop");
    expect(config.gateway.metadata.name).toBe("shop-gateway");
    expect(config.ingressRoutes.map((r) => r.name)).toEqual(["auth", "catalog", "order"]);
    expect(config.virtualServices.map((v) => v.metadata.name).sort()).toEqual([
      "auth",
      "catalog",
      "order",
      "payment",
    ]);
    expect(config.destinationRules).toHaveLength(4);
    expect(config.peerAuthentications).toHaveLength(1);
    expect(config.authorizationPolicies.map((p) => p.metadata.name)).toEqual([
      "allow-nothing",
      "auth",
      "catalog",
      "order",
      "payment",
    ]);
    expect(config.requestAuthentications).toHaveLength(2);
    expect(config.rateLimits.map((r) => r.routeName)).toEqual(["auth"]);
    expect(config.files).toContain("rate-limit.yaml");
    // tracing/ is included by kustomize, not top level: the mesh's default sampling applies.
    expect(config.tracing).toEqual({ samplingPercentage: MESH_TRACE_SAMPLING_PERCENT });
  });

  it.each(variantFiles)("applies variants/%s over the top level", (file) => {
    const config = variantConfig(file);
    expect(config.virtualServices.find((v) => v.metadata.name === "payment")).toBeDefined();
  });

  it("reads a Telemetry's tracing sampling", () => {
    const config = configFrom(`
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: { name: tracing, namespace: shop }
spec:
  tracing:
    - providers: [{ name: jaeger }]
      randomSamplingPercentage: 10
`);
    expect(config.tracing).toEqual({ samplingPercentage: 10 });
  });

  it("takes the mesh's default sampling from the install configuration (values.pilot.traceSampling)", () => {
    const operator = parse(readFileSync(join(repoMesh, "install/istio-operator.yaml"), "utf8"));
    expect(operator.spec.values.pilot.traceSampling).toBe(MESH_TRACE_SAMPLING_PERCENT);
  });
});

describe("Istio's durations", () => {
  it("parses Go's grammar to milliseconds", () => {
    expect(parseIstioDuration("100ms")).toEqual({ ms: 100 });
    expect(parseIstioDuration("2s")).toEqual({ ms: 2000 });
    expect(parseIstioDuration("1h2m3.5s")).toEqual({ ms: 3_723_500 });
    expect(durationMs("1.5s")).toBe(1500);
  });

  it("refuses what Istio refuses", () => {
    expect(parseIstioDuration("10")).toHaveProperty("problem");
    expect(parseIstioDuration("1d")).toHaveProperty("problem");
    expect(parseIstioDuration("500us")).toEqual({
      problem: '"500us": a duration must be at least 1ms',
    });
    expect(parseIstioDuration("1.0005s")).toHaveProperty("problem");
  });
});

describe("refusing what mesh/local does not implement or Istio would reject", () => {
  const refused = (yaml: string, message: RegExp, withRepo = false) => {
    expect(() => configFrom(yaml, { withRepo })).toThrowError(MeshConfigError);
    expect(() => configFrom(yaml, { withRepo })).toThrow(message);
  };

  it("an unknown kind", () => {
    refused(
      `apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: { name: x }\nspec: {}`,
      /^mesh\.yaml: ServiceEntry x: kind ServiceEntry: not implemented by mesh\/local/,
    );
  });

  it("VirtualService: an unimplemented field, a bad duration, a retryOn token, weights", () => {
    refused(
      vs(
        `  hosts: [payment]\n  http: [{ route: [{ destination: { host: payment } }], mirror: { host: payment } }]`,
      ),
      /mesh\.yaml: VirtualService payment: spec\.http\.0\.mirror: not implemented by mesh\/local/,
    );
    refused(
      vs(
        `  hosts: [payment]\n  http: [{ route: [{ destination: { host: payment } }], timeout: 10 }]`,
      ),
      /VirtualService payment: spec\.http\.0\.timeout:/,
    );
    refused(
      vs(
        `  hosts: [payment]\n  http: [{ route: [{ destination: { host: payment } }], timeout: 3 seconds }]`,
      ),
      /spec\.http\.0\.timeout: "3 seconds" is not a duration/,
    );
    refused(
      vs(
        `  hosts: [payment]\n  http: [{ route: [{ destination: { host: payment } }], retries: { attempts: 2, retryOn: "5xx,retriable-headers" } }]`,
      ),
      /spec\.http\.0\.retries\.retryOn: retry condition "retriable-headers": not implemented/,
    );
    refused(
      vs(
        `  hosts: [payment]\n  http: [{ route: [{ destination: { host: payment }, weight: 0 }, { destination: { host: order } }] }]`,
      ),
      /VirtualService payment: spec\.http\.0: route \(unnamed\): total destination weight = 0/,
    );
    refused(
      vs(
        `  hosts: [payment]\n  http: [{ route: [{ destination: { host: payment } }], fault: { abort: { grpcStatus: UNAVAILABLE, percentage: { value: 1 } } } }]`,
      ),
      /spec\.http\.0\.fault\.abort/,
    );
  });

  it("VirtualService retries as Istio 1.30 validates them", () => {
    const retries = (spec: string) =>
      vs(
        `  hosts: [payment]\n  http: [{ route: [{ destination: { host: payment } }], retries: ${spec} }]`,
      );
    refused(
      retries(`{ attempts: 0, retryOn: "5xx" }`),
      /retries: http retry policy configured when attempts are set to 0 \(disabled\)/,
    );
    refused(retries(`{ attempts: 0, perTryTimeout: 1s }`), /attempts are set to 0 \(disabled\)/);
    // Go's http.StatusText names no 599; Istio does not trim tokens.
    refused(retries(`{ attempts: 2, retryOn: "5xx,599" }`), /599 is not an HTTP status code/);
    refused(retries(`{ attempts: 2, retryOn: "5xx, reset" }`), /retry condition " reset"/);
    refused(retries(`{ attempts: 2, retryOn: "5xx," }`), /retry condition ""/);
    expect(() => configFrom(retries(`{ attempts: 0 }`))).not.toThrow();
    expect(() => configFrom(retries(`{ attempts: 2, retryOn: "5xx,503,429" }`))).not.toThrow();
  });

  it("VirtualService weights are relative, as Envoy's: any total above 0", () => {
    expect(() =>
      configFrom(
        vs(
          `  hosts: [payment]\n  http: [{ route: [{ destination: { host: payment }, weight: 90 }, { destination: { host: order }, weight: 20 }] }]`,
        ),
      ),
    ).not.toThrow();
    expect(() =>
      configFrom(
        vs(
          `  hosts: [payment]\n  http: [{ route: [{ destination: { host: payment }, weight: 0 }] }]`,
        ),
      ),
    ).not.toThrow();
  });

  it("VirtualService: hosts outside namespace shop and unknown subsets", () => {
    refused(
      vs(
        `  hosts: [payment.other.svc.cluster.local]\n  http: [{ route: [{ destination: { host: payment } }] }]`,
      ),
      /spec\.hosts\.0: host payment\.other\.svc\.cluster\.local is outside namespace shop/,
    );
    refused(
      vs(`  hosts: [payment]\n  http: [{ route: [{ destination: { host: example.com } }] }]`),
      /spec\.http\.0\.route\.0\.destination\.host: host example\.com is outside namespace shop/,
    );
    refused(
      vs(
        `  hosts: [payment]\n  http: [{ route: [{ destination: { host: payment, subset: v3 } }] }]`,
      ),
      /spec\.http\.0\.route\.0\.destination\.subset: unknown subset v3 of payment/,
      true,
    );
  });

  it("DestinationRule: unimplemented load balancer and TLS mode, bad outlier values", () => {
    refused(
      dr(
        `  host: payment\n  trafficPolicy: { loadBalancer: { consistentHash: { httpHeaderName: x } } }`,
      ),
      /DestinationRule payment: spec\.trafficPolicy\.loadBalancer\.consistentHash: not implemented/,
    );
    refused(
      dr(`  host: payment\n  trafficPolicy: { tls: { mode: SIMPLE } }`),
      /spec\.trafficPolicy\.tls\.mode/,
    );
    refused(
      dr(`  host: payment\n  trafficPolicy: { outlierDetection: { interval: 10 } }`),
      /spec\.trafficPolicy\.outlierDetection\.interval/,
    );
    refused(
      dr(
        `  host: payment\n  subsets: [{ name: v1, labels: { version: v1 } }, { name: v1, labels: { version: v2 } }]`,
      ),
      /spec\.subsets: subset v1 is defined twice/,
    );
  });

  it("DestinationRule: a TLS mode other than ISTIO_MUTUAL", () => {
    refused(
      `apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: { name: d }\nspec: { host: payment, trafficPolicy: { tls: { mode: DISABLE } } }`,
      /DestinationRule d: spec\.trafficPolicy\.tls\.mode: not implemented by mesh\/local: only ISTIO_MUTUAL/,
    );
  });

  it("PeerAuthentication: port-level mTLS and unknown modes", () => {
    refused(
      `apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: { name: p }\nspec: { mtls: { mode: STRICT }, portLevelMtls: { "8080": { mode: DISABLE } } }`,
      /PeerAuthentication p: spec\.portLevelMtls: not implemented/,
    );
    refused(
      `apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: { name: p }\nspec: { mtls: { mode: STRIKT } }`,
      /PeerAuthentication p: spec\.mtls\.mode/,
    );
  });

  it("AuthorizationPolicy: CUSTOM, AUDIT, ipBlocks, unimplemented condition keys", () => {
    const policy = (spec: string) =>
      `apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: { name: a }\nspec: ${spec}`;
    refused(
      policy(`{ action: CUSTOM, provider: { name: x } }`),
      /AuthorizationPolicy a: spec\.provider: not implemented.*; spec\.action: only ALLOW and DENY/,
    );
    refused(policy(`{ action: AUDIT }`), /spec\.action: only ALLOW and DENY/);
    refused(
      policy(`{ rules: [{ from: [{ source: { ipBlocks: [10.0.0.0/8] } }] }] }`),
      /spec\.rules\.0\.from\.0\.source\.ipBlocks: not implemented/,
    );
    refused(
      policy(`{ rules: [{ when: [{ key: source.ip, values: [10.0.0.1] }] }] }`),
      /spec\.rules\.0\.when\.0\.key: condition key not implemented/,
    );
    refused(
      policy(`{ targetRef: { kind: Service, name: x } }`),
      /spec\.targetRef: not implemented/,
    );
  });

  it("RequestAuthentication: unimplemented fields and a missing JWKS", () => {
    const ra = (rule: string) =>
      `apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: { name: r }\nspec: { jwtRules: [${rule}] }`;
    refused(
      ra(`{ issuer: i, jwksUri: "http://auth/.well-known/jwks.json", outputPayloadToHeader: x }`),
      /RequestAuthentication r: spec\.jwtRules\.0\.outputPayloadToHeader: not implemented/,
    );
    refused(ra(`{ issuer: i }`), /spec\.jwtRules\.0: exactly one of jwksUri and jwks/);
    refused(ra(`{ issuer: i, jwksUri: "ftp://auth/jwks" }`), /spec\.jwtRules\.0\.jwksUri/);
  });

  it("Telemetry: metrics and access logging", () => {
    refused(
      `apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: { name: t }\nspec: { accessLogging: [{ providers: [{ name: envoy }] }] }`,
      /Telemetry t: spec\.accessLogging: not implemented/,
    );
  });

  it("EnvoyFilter: any other shape than the local rate limit", () => {
    refused(
      `apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: { name: lua, namespace: istio-system }\nspec:\n  workloadSelector: { labels: { istio: ingressgateway } }\n  configPatches:\n    - applyTo: HTTP_FILTER\n      match: { context: GATEWAY, listener: { filterChain: { filter: { name: envoy.filters.network.http_connection_manager } } } }\n      patch: { operation: INSERT_BEFORE, value: { name: envoy.filters.http.lua, typed_config: {} } }`,
      /EnvoyFilter lua: spec\.configPatches/,
    );
  });
});
