import { describe, expect, it } from "vitest";
import { environmentOf, type K8sObject, type Overlay } from "../src/index.js";
import { built } from "./support.js";

const services = ["auth", "catalog", "order", "payment"];
const of = (objects: K8sObject[], kind: string) => objects.filter((o) => o.kind === kind);
const deployment = (objects: K8sObject[], name: string) =>
  of(objects, "Deployment").find((d) => d.metadata.name === name)!;
const sampling = (objects: K8sObject[]) =>
  of(objects, "Telemetry")[0]?.spec.tracing[0].randomSamplingPercentage;

describe("what each overlay sets", () => {
  it("the namespace has sidecar injection on in every overlay", () => {
    for (const overlay of ["dev", "staging", "prod"] as Overlay[]) {
      const namespace = of(built(overlay), "Namespace").find((n) => n.metadata.name === "shop");
      expect(namespace?.metadata.labels?.["istio-injection"]).toBe("enabled");
    }
  });

  it("every service exports its OpenTelemetry spans to the Jaeger collector in every overlay", () => {
    for (const overlay of ["dev", "staging", "prod"] as Overlay[]) {
      const objects = built(overlay);
      for (const name of services) {
        expect(
          environmentOf(objects, deployment(objects, name)).get("OTEL_EXPORTER_OTLP_ENDPOINT"),
          `${overlay}/${name}`,
        ).toBe("http://jaeger-collector.istio-system.svc.cluster.local:4318");
      }
    }
  });

  it("dev: one replica, a Postgres per service, full tracing, a seeded catalog, payment v2", () => {
    const objects = built("dev");
    for (const name of services) expect(deployment(objects, name).spec.replicas).toBe(1);
    expect(
      of(objects, "StatefulSet")
        .map((s) => s.metadata.name)
        .sort(),
    ).toEqual(services.map((s) => `${s}-postgres`));
    expect(sampling(objects)).toBe(100);
    expect(environmentOf(objects, deployment(objects, "catalog")).get("SEED_PRODUCTS")).toBe(
      "true",
    );
    expect(environmentOf(objects, deployment(objects, "auth")).get("ADMIN_EMAIL")).toBe(
      "admin@thinmesh.local",
    );
    const v2 = deployment(objects, "payment-v2");
    expect(v2.spec.template.metadata.labels).toMatchObject({ app: "payment", version: "v2" });
    expect(environmentOf(objects, deployment(objects, "payment")).get("DATABASE_URL")).toMatch(
      /^postgres:\/\/payment:dev-only-[^@]+@payment-postgres\.shop\.svc\.cluster\.local:5432\/payment$/,
    );
  });

  it("staging: two replicas each", () => {
    const objects = built("staging");
    for (const name of services) expect(deployment(objects, name).spec.replicas).toBe(2);
    expect(sampling(objects)).toBe(10);
  });

  it("prod: three replicas, HPA, PDB, topology spread, 1 % tracing, no laptop Postgres", () => {
    const objects = built("prod");
    for (const name of services) {
      const d = deployment(objects, name);
      expect(d.spec.replicas).toBe(3);
      expect(d.spec.template.spec.topologySpreadConstraints).toHaveLength(2);
      const ref = d.spec.template.spec.containers[0].env.find(
        (e: { name: string }) => e.name === "DATABASE_URL",
      );
      expect(ref.valueFrom.secretKeyRef).toEqual({ name: `${name}-database`, key: "DATABASE_URL" });
    }
    expect(
      of(objects, "HorizontalPodAutoscaler").map((h) => [h.metadata.name, h.spec.minReplicas]),
    ).toEqual(services.map((s) => [s, 3]));
    expect(of(objects, "PodDisruptionBudget")).toHaveLength(4);
    expect(of(objects, "StatefulSet")).toEqual([]);
    expect(of(objects, "Secret")).toEqual([]);
    expect(objects.filter((o) => o.metadata.labels?.["thinmesh.dev/dev-only"])).toEqual([]);
    expect(sampling(objects)).toBe(1);
    expect(deployment(objects, "payment-v2")).toBeUndefined();
  });
});
