import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Ajv, type ValidateFunction } from "ajv";
import { beforeAll, describe, expect, it } from "vitest";
import {
  parseDockerfile,
  repoRoot,
  serviceBuildArgs,
  serviceDockerfilePath,
  servicesWithImages,
} from "./dockerfile.js";
import { imagesOf, type Loose, readYaml, renderOverlay } from "./manifests.js";

// skaffold's published JSON schema for skaffold/v4beta14 (schemas/v4beta14.json in the
// skaffold repository), kept here so that the test runs offline.
const schemaFile = join(repoRoot, "test/images/schemas/skaffold-v4beta14.json");

let validate: ValidateFunction;
beforeAll(() => {
  // strict: false because the schema carries skaffold's own keywords (preferredOrder,
  // x-intellij-html-description) next to JSON Schema's.
  // (The schema uses no "format", so ajv-formats is not needed.)
  const ajv = new Ajv({ strict: false, allErrors: true });
  validate = ajv.compile(JSON.parse(readFileSync(schemaFile, "utf8")));
});

const errorsOf = (config: unknown) =>
  validate(config) ? [] : (validate.errors ?? []).map((e) => `${e.instancePath} ${e.message}`);

const services = servicesWithImages();
const config: Loose = readYaml("skaffold.yaml");

describe("skaffold.yaml", () => {
  it("is a skaffold/v4beta14 config that the schema accepts", () => {
    expect(config.apiVersion).toBe("skaffold/v4beta14");
    expect(config.kind).toBe("Config");
    expect(errorsOf(config)).toEqual([]);
  });

  it("fails the schema with an unknown or misplaced field", () => {
    const broken = structuredClone(config);
    broken.build.artifacts[0].dockerfile = "Dockerfile"; // belongs under docker:
    expect(errorsOf(broken).length).toBeGreaterThan(0);
    const misplaced = structuredClone(config);
    misplaced.build.artifacts[0].buildArgs = { SERVICE: "auth" }; // belongs under docker:
    expect(errorsOf(misplaced).length).toBeGreaterThan(0);
    const typo = structuredClone(config);
    typo.portForward[0].localport = 8080;
    expect(errorsOf(typo).length).toBeGreaterThan(0);
  });

  it("builds one image per service from the repository root, the Dockerfile's image stage and the service's build argument", () => {
    const artifacts: Loose[] = config.build.artifacts;
    expect(artifacts.map((a) => a.image).sort()).toEqual(services.map((s) => `thinmesh/${s}`));
    for (const artifact of artifacts) {
      const service = artifact.image.replace("thinmesh/", "");
      expect(artifact.context, artifact.image).toBe(".");
      // docker.dockerfile is relative to the context (the repository root).
      expect(join(repoRoot, artifact.context, artifact.docker.dockerfile)).toBe(
        serviceDockerfilePath,
      );
      expect(artifact.docker.buildArgs, artifact.image).toEqual(serviceBuildArgs(service));
      const dockerfile = parseDockerfile(serviceDockerfilePath, {
        buildArgs: artifact.docker.buildArgs,
      });
      expect(dockerfile.errors, artifact.image).toEqual([]);
      const stages = dockerfile.stages;
      if (artifact.docker.target !== undefined) {
        expect(artifact.docker.target, "the image stage is the Dockerfile's last").toBe(
          stages.at(-1)?.name,
        );
      }
    }
  });

  it("renders the dev overlay by default, and each overlay from its profile", () => {
    expect(config.manifests.kustomize.paths).toEqual(["kustomize/overlays/dev"]);
    expect(config.deploy.kubectl).toBeDefined();
    const profiles = new Map<string, Loose>(config.profiles.map((p: Loose) => [p.name, p]));
    expect([...profiles.keys()].sort()).toEqual(["dev", "prod", "staging"]);
    for (const [name, profile] of profiles) {
      const paths: string[] = profile.manifests.kustomize.paths;
      expect(paths).toEqual([`kustomize/overlays/${name}`]);
      expect(existsSync(join(repoRoot, paths[0]!, "kustomization.yaml")), paths[0]).toBe(true);
    }
  });

  it("forwards the ingress gateway, Kiali and Jaeger", () => {
    const forwards = config.portForward.map((f: Loose) => ({
      resource: `${f.resourceType}/${f.namespace}/${f.resourceName}:${f.port}`,
      local: f.localPort,
    }));
    expect(forwards).toEqual(
      expect.arrayContaining([
        { resource: "Service/istio-system/istio-ingressgateway:80", local: 8080 },
        { resource: "Service/istio-system/kiali:20001", local: 20001 },
        { resource: "Service/istio-system/tracing:80", local: 16686 },
      ]),
    );
  });

  it("builds exactly the images each overlay deploys", () => {
    for (const overlay of ["dev", "staging", "prod"]) {
      const deployed = imagesOf(renderOverlay(`kustomize/overlays/${overlay}`))
        .filter((image) => image.startsWith("thinmesh/"))
        .map((image) => image.split(":")[0]);
      expect([...new Set(deployed)].sort(), overlay).toEqual(
        config.build.artifacts.map((a: Loose) => a.image).sort(),
      );
    }
  });
});
