import { readdirSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import {
  formatFindings,
  IstioSchemas,
  kustomizeBuild,
  overlays,
  readObjects,
  repoRoot,
  validateSchemas,
  withReplacements,
} from "../src/index.js";
import { built, fixture, fixturesDir, istioSchemas } from "./support.js";

describe("every overlay builds and every object matches its schema", () => {
  for (const overlay of overlays) {
    it(`${overlay}: kubectl kustomize succeeds and the objects validate`, () => {
      const objects = built(overlay);
      expect(objects.length).toBeGreaterThan(20);
      expect(formatFindings(validateSchemas(objects, istioSchemas()))).toBe("");
    });
  }

  it("the variants users apply by hand validate too", () => {
    const dir = join(repoRoot, "mesh", "istio", "variants");
    const objects = readdirSync(dir)
      .filter((f) => f.endsWith(".yaml"))
      .flatMap((f) => readObjects(join(dir, f)));
    expect(objects.length).toBeGreaterThanOrEqual(5);
    expect(formatFindings(validateSchemas(objects, istioSchemas()))).toBe("");
  });
});

describe("the schema checks fail on broken fixtures", () => {
  const cases: [fixture: string, message: RegExp][] = [
    [
      "schema-istio-unknown-field",
      /VirtualService shop\/catalog: spec\.http\.0: unknown field "retry"/,
    ],
    ["schema-istio-cel", /spec\.http\.0\.timeout: must be a valid duration greater than 1ms/],
    [
      "schema-istio-enum",
      /PeerAuthentication shop\/default: spec\.mtls\.mode: must be equal to one of the allowed values/,
    ],
    [
      "schema-kubernetes-unknown-field",
      /Pod shop\/probe-typo: spec\.containers\[0\]\.readinessprobe: Object literal may only specify known properties, and '"readinessprobe"' does not exist in type 'IContainer'/,
    ],
    [
      "schema-istio-envoyfilter",
      /EnvoyFilter istio-system\/auth-rate-limit: spec: only one of targetRefs or workloadSelector can be set[\s\S]*spec\.configPatches\.0\.match: only support waypointMatch when context is WAYPOINT/,
    ],
    ["schema-kubernetes-type", /Service shop\/catalog: spec\.ports\.0\.port: must be integer/],
    ["schema-unknown-kind", /Deployment shop\/typo: no schema known for app\/v1 Deployment/],
  ];
  for (const [name, message] of cases) {
    it(name, () => {
      const objects = withReplacements(built("dev"), fixture(name));
      const report = formatFindings(validateSchemas(objects, istioSchemas()));
      expect(report).toMatch(message);
    });
  }

  it("a kustomization that does not build fails with kustomize's message", () => {
    expect(() => kustomizeBuild(join(fixturesDir, "broken-kustomization"))).toThrow(
      /kubectl kustomize .*broken-kustomization failed: .*missing\.yaml/,
    );
  });

  it("missing Istio CRDs fail with a message that says where to put them", () => {
    expect(() => IstioSchemas.load("/nonexistent/istio-crd-all.gen.yaml")).toThrow(
      /Istio CRD schemas not found at \/nonexistent\/istio-crd-all\.gen\.yaml.*THINMESH_ISTIO_CRDS/,
    );
  });
});
