import { join } from "node:path";
import { describe, expect, it } from "vitest";
import {
  analyze,
  type CheckName,
  formatFindings,
  kustomizeBuild,
  type Overlay,
  overlays,
  without,
  withReplacements,
} from "../src/index.js";
import { built, fixture, fixturesDir, repoFacts } from "./support.js";

describe("the mesh analyzer passes on the repository", () => {
  for (const overlay of overlays) {
    it(overlay, () => {
      expect(formatFindings(analyze(built(overlay), repoFacts()))).toBe("");
    });
  }
});

/** Runs one check on a build with a fixture swapped in; returns its report. */
function report(check: CheckName, fixtureName: string, overlay: Overlay = "dev"): string {
  const objects = withReplacements(built(overlay), fixture(fixtureName));
  return formatFindings(analyze(objects, repoFacts(), [check]));
}

describe("each check fails on its broken fixture with a clear message", () => {
  const cases: [CheckName, string, RegExp[], Overlay?][] = [
    [
      "routing",
      "routing-unknown-subset",
      [
        /VirtualService shop\/catalog: http\[0\] \(catalog\)\.route\[0\]: subset v3 is not defined by a DestinationRule for catalog/,
      ],
    ],
    [
      "routing",
      "routing-weights",
      [
        /VirtualService shop\/payment: http\[0\] \(payment\): weights add up to 110, not 100 \(90 \+ 20\)/,
      ],
    ],
    [
      "routing",
      "routing-no-v2-deployment",
      [/subset v2 \(version=v2\) of payment gets weight 10 but selects no Deployment/],
      "prod",
    ],
    [
      "routing",
      "routing-unknown-host",
      [
        /host catalogue is not a Service in namespace shop/,
        /destination host catalogue is not a Service/,
      ],
    ],
    [
      "istio-rules",
      "istio-rules-precision",
      [/http\[0\] \(catalog\)\.timeout: "1500us": only whole milliseconds are supported/],
    ],
    [
      "istio-rules",
      "istio-rules-per-try-not-retried",
      [
        /retries\.perTryTimeout 2s is never retried: retryOn "connect-failure,refused-stream" has none of 5xx, gateway-error, reset/,
      ],
    ],
    [
      "istio-rules",
      "istio-rules-retry-on",
      [
        /retries\.attempts: attempts cannot be negative/,
        /retryOn: " reset" is not a valid retryOn policy/,
      ],
    ],
    [
      "istio-rules",
      "istio-rules-attempts-zero",
      [/http retry policy configured when attempts are set to 0 \(disabled\)/],
    ],
    [
      "istio-rules",
      "istio-rules-fault-percentage",
      [/fault\.abort: no percentage, so nothing is injected/],
    ],
    [
      "principals",
      "principals-unknown-account",
      [
        /AuthorizationPolicy shop\/payment: principal cluster\.local\/ns\/shop\/sa\/orders is not a ServiceAccount of this build/,
      ],
    ],
    [
      "call-graph",
      "call-graph-missing",
      [
        /the AuthorizationPolicies do not allow exactly the call graph/,
        /missing \(needed by shop\.events\.v1\.PaymentRequested \(config\/subscriptions\.yaml\), no policy allows it\): order → payment \/shop\.events\.v1\.EventSinkService\/Deliver/,
        /extra \(allowed by AuthorizationPolicy shop\/payment, nothing in the configuration calls it\): order → payment \/shop\.payment\.v1\.PaymentService\/GetPayment/,
      ],
    ],
    [
      "call-graph",
      "call-graph-extra",
      [
        /extra \(allowed by AuthorizationPolicy shop\/catalog.*\): payment → catalog \/shop\.catalog\.v1\.CatalogService\/GetProducts/,
      ],
    ],
    [
      "call-graph",
      "call-graph-any-source",
      [
        /extra .*: \* → payment \/shop\.events\.v1\.EventSinkService\/Deliver/,
        /missing .*: order → payment/,
      ],
    ],
    [
      "edge-tokens",
      "edge-tokens-no-request-principals",
      [
        /AuthorizationPolicy shop\/order: \/shop\.order\.v1\.OrderService\/PlaceOrder needs an access token but the edge allows it without requestPrincipals/,
      ],
    ],
    [
      "edge-tokens",
      "edge-tokens-no-request-authentication",
      [
        /requestPrincipals of issuer https:\/\/auth\.thinmesh\.local, but no RequestAuthentication for app order accepts that issuer/,
      ],
    ],
    [
      "mtls",
      "mtls-permissive",
      [
        /no namespace-wide PeerAuthentication with mtls\.mode STRICT/,
        /PeerAuthentication shop\/default: mTLS mode PERMISSIVE weakens/,
      ],
    ],
    [
      "mtls",
      "mtls-destination-rule",
      [/DestinationRule shop\/order: trafficPolicy\.tls\.mode is DISABLE, not ISTIO_MUTUAL/],
    ],
    [
      "service-ports",
      "service-ports-no-protocol",
      [/Service shop\/catalog: port 8080 \(web\) carries no protocol/],
    ],
    [
      "workloads",
      "workloads-insecure",
      [
        /Deployment shop\/catalog: metadata\.labels lack app\.kubernetes\.io\/name/,
        /spec\.template\.metadata\.labels lack version, app\.kubernetes\.io\/name/,
        /container catalog: livenessProbe must be an httpGet of \/healthz/,
        /resources\.limits\.cpu is not set/,
        /runAsNonRoot is not true/,
        /runAsUser must be a non-zero UID/,
        /readOnlyRootFilesystem is not true/,
        /allowPrivilegeEscalation is not false/,
        /capabilities\.drop does not include ALL/,
        /seccompProfile\.type is not RuntimeDefault/,
        /no writable \/tmp/,
        /port 8080 is not declared with a name/,
        /terminationGracePeriodSeconds 5 is not above SHUTDOWN_GRACE_MS 10000/,
      ],
    ],
    [
      "workloads",
      "workloads-default-account",
      [
        /Deployment shop\/payment: spec\.template\.spec\.serviceAccountName: a workload needs its own ServiceAccount/,
      ],
    ],
    [
      "configuration",
      "configuration-missing-peer-url",
      [/Deployment shop\/catalog: ORDER_URL is not set, but catalog calls order/],
    ],
    [
      "configuration",
      "configuration-wrong-port",
      [
        /Deployment shop\/order: CATALOG_URL: http:\/\/catalog\.shop\.svc\.cluster\.local: Service catalog has no port 80/,
      ],
    ],
    [
      "configuration",
      "configuration-subscriptions-drift",
      [
        /ConfigMap shop\/event-subscriptions-\w+: subscriptions\.yaml differs from config\/subscriptions\.yaml/,
      ],
    ],
    [
      "configuration",
      "configuration-request-authentication",
      [
        /RequestAuthentication shop\/catalog: audience shop is not the AUTH_AUDIENCE the services use \(thinmesh\)/,
        /forwardOriginalToken is not true/,
      ],
    ],
    [
      "envoy-filters",
      "envoy-filters-gateway-selector",
      [
        /EnvoyFilter shop\/gateway-buffer: metadata\.namespace is shop, but workloadSelector\.labels \(istio=ingressgateway\) select the ingress gateway: .*never applies\. It must be in istio-system: set metadata\.namespace: istio-system/,
      ],
    ],
  ];
  for (const [check, name, messages, overlay] of cases) {
    it(`${check}: ${name}`, () => {
      const text = report(check, name, overlay);
      for (const message of messages) expect(text).toMatch(message);
    });
  }

  it("call-graph: no allow-nothing policy", () => {
    const objects = without(built("dev"), "AuthorizationPolicy", "allow-nothing");
    expect(formatFindings(analyze(objects, repoFacts(), ["call-graph"]))).toMatch(
      /no allow-nothing AuthorizationPolicy \(spec: \{\}\) in namespace shop/,
    );
  });

  it("envoy-filters: kustomize's namespace field moved the rate limit out of istio-system", () => {
    // The dev overlay as it rendered with `namespace: shop`, which overwrote the EnvoyFilter's.
    const objects = kustomizeBuild(join(fixturesDir, "envoy-filters-namespace-field"));
    const text = formatFindings(analyze(objects, repoFacts(), ["envoy-filters"]));
    expect(text).toMatch(
      /^\[envoy-filters\] EnvoyFilter shop\/auth-rate-limit: metadata\.namespace is shop, but configPatches\[0\]\.match\.context is GATEWAY and workloadSelector\.labels \(istio=ingressgateway\) select the ingress gateway: the ingress gateway runs in istio-system/,
    );
    expect(text).toMatch(
      /mesh\/istio\/rate-limit\.yaml declares metadata\.namespace istio-system, but a kustomization's namespace field overwrote it: list kustomize\/transformers\/namespace under transformers/,
    );
    expect(text.split("\n")).toHaveLength(1);
  });

  it("envoy-filters: a gateway EnvoyFilter the file itself puts in shop is to be moved there", () => {
    const objects = built("dev").map((o) =>
      o.kind === "EnvoyFilter" ? { ...o, metadata: { ...o.metadata, namespace: "shop" } } : o,
    );
    const facts = repoFacts();
    const manifests = new Map(facts.manifests);
    manifests.set("EnvoyFilter/auth-rate-limit", {
      file: "mesh/istio/rate-limit.yaml",
      namespace: "shop",
    });
    expect(formatFindings(analyze(objects, { ...facts, manifests }, ["envoy-filters"]))).toMatch(
      /It must be in istio-system: set metadata\.namespace: istio-system in mesh\/istio\/rate-limit\.yaml$/,
    );
  });

  it("envoy-filters: a sidecar's EnvoyFilter in its workload's namespace is fine", () => {
    const text = report("envoy-filters", "envoy-filters-gateway-selector");
    expect(text).toMatch(/gateway-buffer/);
    expect(text).not.toMatch(/auth-sidecar-buffer/);
  });

  it("envoy-filters: the rate limit is in istio-system in every overlay", () => {
    for (const overlay of overlays) {
      const filters = built(overlay).filter((o) => o.kind === "EnvoyFilter");
      expect(filters.map((f) => `${f.metadata.namespace}/${f.metadata.name}`)).toEqual([
        "istio-system/auth-rate-limit",
      ]);
    }
  });

  it("routing: a subset at weight 0 may be empty (payment v2 before the canary is deployed)", () => {
    expect(formatFindings(analyze(built("prod"), repoFacts(), ["routing"]))).toBe("");
    expect(built("prod").some((o) => o.metadata.name === "payment-v2")).toBe(false);
  });
});
