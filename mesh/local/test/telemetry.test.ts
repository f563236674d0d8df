// The names the proxies' telemetry gives workloads and edges: Istio's labels, so the console
// and the canary analysis read locally what they read from Prometheus in a cluster.
import { describe, expect, it } from "vitest";
import { accessLine } from "../src/print.js";
import { type Instance, ingressGateway, peerWorkloadOf } from "../src/sidecar/instances.js";
import {
  type AccessRecord,
  accessRecord,
  createTelemetry,
  destinationFields,
  type RequestFacts,
  sourceFields,
} from "../src/sidecar/telemetry.js";

const instance = (deployment: string, labels: Record<string, string>): Instance => ({
  id: `${deployment}-0`,
  app: "payment",
  deployment,
  version: labels.version ?? "unknown",
  labels,
  namespace: "shop",
  serviceAccount: "payment",
  principal: "cluster.local/ns/shop/sa/payment",
});

const request = (httpVersion: string): RequestFacts => ({
  req: { httpVersion, headers: { ":authority": "payment" } },
  method: "POST",
  path: "/shop.payment.v1.PaymentService/GetPayment",
  headers: {},
  startedAt: performance.now(),
  startTime: new Date().toISOString(),
  requestId: "r-1",
});

async function series(records: AccessRecord[]) {
  const telemetry = createTelemetry({ namespace: "shop", onRecord: () => {} });
  for (const record of records) telemetry.record(record);
  const text = await telemetry.registry.metrics();
  return {
    text,
    labels: text
      .split("\n")
      .filter((line) => line.startsWith("istio_requests_total{"))
      .map((line) =>
        Object.fromEntries(
          [...line.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]] as [string, string]),
        ),
      ),
  };
}

describe("peer workloads (Istio's canonical names)", () => {
  it("a version's workload is its Deployment; the canonical service and revision come from the labels", () => {
    expect(
      peerWorkloadOf(
        instance("payment-v2", {
          app: "payment",
          version: "v2",
          "app.kubernetes.io/name": "payments",
          "app.kubernetes.io/version": "2.0",
        }),
      ),
    ).toMatchObject({
      workload: "payment-v2",
      app: "payment",
      version: "v2",
      canonicalService: "payments",
      canonicalRevision: "2.0",
    });
    // service.istio.io/canonical-* win; without any, app and version; then the workload and latest.
    expect(
      peerWorkloadOf(
        instance("payment", {
          app: "payment",
          "service.istio.io/canonical-name": "pay",
          "service.istio.io/canonical-revision": "r7",
          "app.kubernetes.io/name": "payments",
        }),
      ),
    ).toMatchObject({ canonicalService: "pay", canonicalRevision: "r7", version: "unknown" });
    expect(peerWorkloadOf(instance("payment", {}))).toMatchObject({
      app: "unknown",
      canonicalService: "payment",
      canonicalRevision: "latest",
    });
  });
});

const v2 = peerWorkloadOf(instance("payment-v2", { app: "payment", version: "v2" }));

describe("istio_requests_total", () => {
  it("carries Istio's standard labels for an edge, from the destination's side", async () => {
    const { labels } = await series([
      accessRecord(request("2.0"), {
        reporter: "destination",
        ...sourceFields(ingressGateway),
        source_principal: ingressGateway.principal,
        destination_service: "payment.shop.svc.cluster.local",
        ...destinationFields(v2),
        connection_security_policy: "mutual_tls",
        response_code: 200,
      }),
    ]);
    expect(labels).toEqual([
      {
        reporter: "destination",
        source_workload: "istio-ingressgateway",
        source_workload_namespace: "istio-system",
        source_principal:
          "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account",
        source_app: "istio-ingressgateway",
        source_version: "unknown",
        source_canonical_service: "istio-ingressgateway",
        source_canonical_revision: "latest",
        source_cluster: "Kubernetes",
        destination_workload: "payment-v2",
        destination_workload_namespace: "shop",
        destination_principal: "spiffe://cluster.local/ns/shop/sa/payment",
        destination_app: "payment",
        destination_version: "v2",
        destination_service: "payment.shop.svc.cluster.local",
        destination_service_name: "payment",
        destination_service_namespace: "shop",
        destination_canonical_service: "payment",
        destination_canonical_revision: "v2",
        destination_cluster: "Kubernetes",
        request_protocol: "http",
        response_code: "200",
        response_flags: "-",
        grpc_response_status: "",
        connection_security_policy: "mutual_tls",
      },
    ]);
  });

  it("a caller's local reply before any endpoint keeps the service and leaves the workload unknown", async () => {
    const { labels } = await series([
      accessRecord(request("1.1"), {
        reporter: "source",
        ...sourceFields(ingressGateway),
        destination_service: "payment.shop.svc.cluster.local",
        response_code: 503,
        response_flags: "UH",
      }),
    ]);
    expect(labels[0]).toMatchObject({
      destination_service: "payment.shop.svc.cluster.local",
      destination_service_name: "payment",
      destination_workload: "unknown",
      destination_canonical_service: "unknown",
      destination_cluster: "unknown",
      // A caller's side never knows the connection's security (Istio's client-side metrics).
      connection_security_policy: "unknown",
    });
  });

  it("buckets durations at Envoy's default boundaries, up to an hour", async () => {
    const { text } = await series([
      accessRecord(request("2.0"), { reporter: "source", ...sourceFields(ingressGateway) }),
    ]);
    const bounds = [
      ...text.matchAll(/^istio_request_duration_milliseconds_bucket\{le="([^"]+)"/gm),
    ].map((m) => m[1]);
    expect(bounds).toEqual([
      "0.5",
      "1",
      "5",
      "10",
      "25",
      "50",
      "100",
      "250",
      "500",
      "1000",
      "2500",
      "5000",
      "10000",
      "30000",
      "60000",
      "300000",
      "600000",
      "1800000",
      "3600000",
      "+Inf",
    ]);
  });
});

describe("access records", () => {
  it("say the protocol as Envoy's %PROTOCOL% does", () => {
    const of = (version: string) =>
      accessRecord(request(version), { reporter: "source", ...sourceFields(ingressGateway) })
        .protocol;
    expect([of("2.0"), of("1.1"), of("1.0")]).toEqual(["HTTP/2", "HTTP/1.1", "HTTP/1.0"]);
  });

  it("print the service and the version that answered, or the service alone for a local reply", () => {
    const base = accessRecord(request("2.0"), {
      reporter: "source",
      ...sourceFields(ingressGateway),
      destination_service: "payment.shop.svc.cluster.local",
      response_code: 200,
    });
    expect(accessLine({ ...base, ...destinationFields(v2) })).toContain("→ payment/v2 POST");
    expect(accessLine({ ...base, response_code: 503, response_flags: "UH" })).toContain(
      "→ payment POST /shop.payment.v1.PaymentService/GetPayment 503 UH",
    );
  });
});
