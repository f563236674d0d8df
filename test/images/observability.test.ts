// The Istio install configuration (mesh/istio/install) and Kiali's (mesh/kiali): that they
// agree with each other, with the Telemetry and RequestAuthentication in mesh/istio, and with
// the port-forwards skaffold.yaml, the Tiltfile and the docs point users at.
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { repoRoot } from "./dockerfile.js";
import { type Loose, readYaml } from "./manifests.js";

/** Every YAML document under a directory of the repository, with its file. */
function documentsUnder(dir: string): { file: string; doc: Loose }[] {
  const result: { file: string; doc: Loose }[] = [];
  const walk = (path: string) => {
    for (const name of readdirSync(path)) {
      const child = join(path, name);
      if (statSync(child).isDirectory()) walk(child);
      else if (/\.ya?ml$/.test(name) || name === "Kustomization") {
        for (const doc of parseAllDocuments(readFileSync(child, "utf8"))) {
          const value = doc.toJS();
          if (value) result.push({ file: relative(repoRoot, child), doc: value });
        }
      }
    }
  };
  walk(join(repoRoot, dir));
  return result;
}

const operator: Loose = readYaml("mesh/istio/install/istio-operator.yaml");
const mesh = operator.spec.meshConfig;
const providers = new Map<string, Loose>(mesh.extensionProviders.map((p: Loose) => [p.name, p]));

describe("mesh/istio/install/istio-operator.yaml", () => {
  it("is an IstioOperator for istioctl install", () => {
    expect(operator.apiVersion).toBe("install.istio.io/v1alpha1");
    expect(operator.kind).toBe("IstioOperator");
    expect(operator.spec.profile).toBe("default");
    const gateways = operator.spec.components?.ingressGateways ?? [];
    expect(gateways.find((g: Loose) => g.name === "istio-ingressgateway")?.enabled).toBe(true);
  });

  it("turns tracing on by default with a provider that reaches Jaeger's collector", () => {
    expect(mesh.enableTracing).toBe(true);
    const defaults: string[] = mesh.defaultProviders.tracing;
    expect(defaults.length).toBeGreaterThan(0);
    for (const name of defaults) expect(providers.has(name), name).toBe(true);
    const otlp = providers.get(defaults[0]!).opentelemetry;
    expect(otlp).toEqual({
      service: "jaeger-collector.istio-system.svc.cluster.local",
      port: 4317,
    });
    expect(providers.get("zipkin")?.zipkin).toEqual({
      service: "zipkin.istio-system.svc.cluster.local",
      port: 9411,
    });
    for (const provider of providers.values()) {
      const kinds = Object.keys(provider).filter((k) => k !== "name");
      expect(kinds, provider.name).toHaveLength(1);
    }
  });

  it("declares every tracing provider a Telemetry in mesh/istio names", () => {
    const telemetries = documentsUnder("mesh/istio").filter(({ doc }) => doc.kind === "Telemetry");
    expect(telemetries.length).toBeGreaterThan(0);
    for (const { file, doc } of telemetries) {
      for (const tracing of doc.spec?.tracing ?? []) {
        for (const provider of tracing.providers ?? []) {
          expect(providers.has(provider.name), `${file} names provider ${provider.name}`).toBe(
            true,
          );
        }
      }
    }
  });

  it("logs JSON, holds apps until their sidecar is up, and lets sidecars fetch in-mesh JWKS", () => {
    expect(mesh.accessLogFile).toBe("/dev/stdout");
    expect(mesh.accessLogEncoding).toBe("JSON");
    expect(mesh.defaultConfig.holdApplicationUntilProxyStarts).toBe(true);
    const inMeshJwks = documentsUnder("mesh/istio")
      .filter(({ doc }) => doc.kind === "RequestAuthentication")
      .flatMap(({ doc }) => doc.spec?.jwtRules ?? [])
      .some((rule: Loose) => /\.svc\.cluster\.local[:/]/.test(rule.jwksUri ?? ""));
    if (inMeshJwks) {
      // istiod cannot fetch an in-mesh JWKS under STRICT mTLS.
      expect(operator.spec.values.pilot.env.PILOT_JWT_ENABLE_REMOTE_JWKS).toMatch(
        /^(envoy|hybrid|true)$/,
      );
    }
  });
});

describe("mesh/kiali", () => {
  const config: Loose = readYaml("mesh/kiali/config.yaml");
  const cr: Loose = readYaml("mesh/kiali/kiali-cr.yaml");

  it("wires Kiali to Istio's Prometheus and Jaeger addons, in the cluster and through the port-forward", () => {
    expect(config.istio_namespace).toBe("istio-system");
    expect(config.istio_labels).toEqual({ app_label_name: "app", version_label_name: "version" });
    expect(config.external_services.prometheus.url).toBe("http://prometheus.istio-system:9090");
    expect(config.external_services.tracing).toMatchObject({
      enabled: true,
      provider: "jaeger",
      internal_url: "http://tracing.istio-system:16685/jaeger",
      use_grpc: true,
      external_url: "http://localhost:16686/jaeger",
    });
    expect(config.server).toMatchObject({ port: 20001, web_root: "/kiali" });
  });

  it("says the same as a Kiali CR", () => {
    expect(cr.apiVersion).toBe("kiali.io/v1alpha1");
    expect(cr.kind).toBe("Kiali");
    for (const key of [
      "auth",
      "istio_namespace",
      "istio_labels",
      "external_services",
      "kiali_feature_flags",
    ]) {
      expect(cr.spec[key], key).toEqual(config[key]);
    }
    expect(cr.spec.deployment).toEqual(config.deployment);
    expect(cr.spec.server.web_root).toBe(config.server.web_root);
  });

  it("matches the labels the shop's workloads carry", () => {
    const workloads = documentsUnder("kustomize/base").filter(
      ({ doc }) => doc.kind === "Deployment",
    );
    expect(workloads.length).toBeGreaterThan(0);
    for (const { file, doc } of workloads) {
      const labels = doc.spec.template.metadata.labels;
      expect(labels[config.istio_labels.app_label_name], file).toBeTruthy();
      expect(labels[config.istio_labels.version_label_name], file).toBeTruthy();
    }
  });
});

describe("the URLs users are given", () => {
  it("are the same in skaffold.yaml, the Tiltfile, the cluster script, Kiali and the docs", () => {
    const skaffold: Loose = readYaml("skaffold.yaml");
    const forwarded = new Map<string, number>(
      skaffold.portForward.map((f: Loose) => [f.resourceName, f.localPort]),
    );
    const kialiUrl = `http://localhost:${forwarded.get("kiali")}/kiali`;
    const jaegerUrl = `http://localhost:${forwarded.get("tracing")}/jaeger`;
    const shopUrl = `http://localhost:${forwarded.get("istio-ingressgateway")}`;
    expect(readYaml("mesh/kiali/config.yaml").external_services.tracing.external_url).toBe(
      jaegerUrl,
    );
    const tiltfile = readFileSync(join(repoRoot, "Tiltfile"), "utf8");
    expect(tiltfile).toMatch(/KIALI_PORT = 20001/);
    expect(tiltfile).toMatch(/JAEGER_PORT = 16686/);
    expect(tiltfile).toMatch(/INGRESS_PORT = 8080/);
    for (const file of ["scripts/cluster-up.sh", "docs/run-on-kubernetes.md"]) {
      const text = readFileSync(join(repoRoot, file), "utf8");
      for (const url of [kialiUrl, jaegerUrl, shopUrl])
        expect(text, `${file}: ${url}`).toContain(url);
    }
  });

  it("installs the Istio release line whose CRDs the manifest checks validate against", () => {
    const script = readFileSync(join(repoRoot, "scripts/cluster-up.sh"), "utf8");
    const version = script.match(/ISTIO_VERSION="\$\{ISTIO_VERSION:-([\d.]+)\}"/)?.[1];
    const crds = readFileSync(join(repoRoot, "mesh/check/schemas/istio-crds.yaml"), "utf8");
    const line = crds.match(/^# Istio release: ([\d.]+)$/m)?.[1];
    expect(line).toBeTruthy();
    expect(version?.startsWith(`${line}.`)).toBe(true);
  });
});
