import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, posix } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  parseDockerfile,
  repoRoot,
  serviceBuildArgs,
  serviceDockerfilePath,
  servicesWithImages,
  words,
} from "./dockerfile.js";
import { type Loose, renderOverlay } from "./manifests.js";

interface Call {
  fn: string;
  args: Loose[];
  kwargs: Record<string, Loose>;
}
interface Facts {
  problems: string[];
  calls: Call[];
  encoded: Loose[][];
}

const dir = mkdtempSync(join(tmpdir(), "thinmesh-tilt-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Runs a Tiltfile under test/images/tiltfile_harness.py against the rendered dev overlay. */
function runTiltfile(text?: string): Facts {
  const tiltfile = text === undefined ? join(repoRoot, "Tiltfile") : join(dir, "Tiltfile");
  if (text !== undefined) writeFileSync(tiltfile, text);
  const objects = join(dir, "objects.json");
  writeFileSync(objects, JSON.stringify(renderOverlay("kustomize/overlays/dev")));
  const output = execFileSync(
    "python3",
    [join(repoRoot, "test/images/tiltfile_harness.py"), tiltfile, objects],
    { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] },
  );
  return JSON.parse(output) as Facts;
}

const services = servicesWithImages();

describe("Tiltfile", () => {
  let facts: Facts;
  beforeAll(() => {
    facts = runTiltfile();
  });
  const calls = (fn: string) => facts.calls.filter((c) => c.fn === fn);

  it("parses as Starlark and uses nothing Starlark lacks", () => {
    expect(facts.problems).toEqual([]);
  });

  it("deploys the dev overlay", () => {
    expect(calls("kustomize").map((c) => c.args[0])).toEqual(["kustomize/overlays/dev"]);
    expect(calls("k8s_yaml")).toHaveLength(1);
  });

  it("builds every service's dev stage from the repository root, with a live update", () => {
    const builds = calls("docker_build");
    expect(builds.map((b) => b.args[0]).sort()).toEqual(services.map((s) => `thinmesh/${s}`));
    for (const build of builds) {
      const service = build.args[0].replace("thinmesh/", "");
      expect(build.kwargs.context).toBe(".");
      // dockerfile is relative to the Tiltfile (the repository root).
      const dockerfile = build.kwargs.dockerfile;
      expect(join(repoRoot, dockerfile)).toBe(serviceDockerfilePath);
      expect(build.kwargs.build_args, service).toEqual(serviceBuildArgs(service));
      const parsed = parseDockerfile(serviceDockerfilePath, { buildArgs: build.kwargs.build_args });
      expect(parsed.errors, service).toEqual([]);
      expect(parsed.stages.map((s) => s.name)).toContain(build.kwargs.target);

      // Everything the Dockerfile copies from the context (for this service: its build
      // argument substituted) must be inside `only`, or the build fails for lack of the file.
      const only: string[] = build.kwargs.only;
      const copied = parsed.stages
        .flatMap((s) => s.instructions)
        .filter((i) => i.keyword === "COPY" && !i.flags.from)
        .flatMap((i) => (i.json ?? words(i.args)).slice(0, -1))
        .map((source) => posix.normalize(source).replace(/\/$/, ""));
      for (const source of copied) {
        expect(
          only.some((path) => source === path || source.startsWith(`${path}/`)),
          `${dockerfile} copies ${source}, which is not in only=`,
        ).toBe(true);
      }

      const steps: Loose[] = build.kwargs.live_update;
      expect(steps.map((s) => s.step)).toEqual(
        expect.arrayContaining(["fall_back_on", "sync", "run"]),
      );
      const syncs = steps
        .filter((s) => s.step === "sync")
        .map((s) => `${s.args[0]} -> ${s.args[1]}`);
      expect(syncs).toEqual(
        expect.arrayContaining([
          `services/${service}/src -> /app/services/${service}/src`,
          "packages/platform/src -> /app/packages/platform/src",
        ]),
      );
      const run = steps.find((s) => s.step === "run");
      expect(run.args[0]).toContain(`tsc -b services/${service}/tsconfig.build.json`);
      const fallBack: string[] = steps.find((s) => s.step === "fall_back_on").args[0];
      expect(fallBack).toEqual(
        expect.arrayContaining(["package-lock.json", `services/${service}/package.json`]),
      );
    }
  });

  it("starts each service after its Postgres", () => {
    const resources = new Map(calls("k8s_resource").map((c) => [c.args[0], c.kwargs]));
    const deployments = renderOverlay("kustomize/overlays/dev").filter(
      (o) => o.kind === "Deployment" && services.includes(o.spec.template.metadata.labels.app),
    );
    expect(deployments.length).toBeGreaterThanOrEqual(services.length);
    for (const deployment of deployments) {
      const app = deployment.spec.template.metadata.labels.app;
      const resource = resources.get(deployment.metadata.name);
      expect(resource, `k8s_resource for ${deployment.metadata.name}`).toBeDefined();
      expect(resource?.resource_deps).toEqual([`${app}-postgres`]);
    }
  });

  it("lets live update write into the service containers, and only those", () => {
    const [objects] = facts.encoded;
    expect(objects).toBeDefined();
    for (const o of objects!) {
      for (const c of o.spec?.template?.spec?.containers ?? []) {
        const writable = c.securityContext?.readOnlyRootFilesystem === false;
        expect(writable, `${o.kind}/${o.metadata.name} ${c.name}`).toBe(
          String(c.image).startsWith("thinmesh/"),
        );
      }
    }
  });

  it("forwards the ingress, Kiali and Jaeger", () => {
    const serve = calls("local_resource").map((c) => c.kwargs.serve_cmd as string);
    expect(serve).toEqual(
      expect.arrayContaining([
        "kubectl -n istio-system port-forward svc/istio-ingressgateway 8080:80",
        "kubectl -n istio-system port-forward svc/kiali 20001:20001",
        "kubectl -n istio-system port-forward svc/tracing 16686:80",
      ]),
    );
  });

  it("fails on a Tiltfile that is not Starlark", () => {
    const original = readFileSync(join(repoRoot, "Tiltfile"), "utf8");
    expect(() => runTiltfile(`${original}\nif True\n    pass\n`)).toThrow(/SyntaxError/);
    const python = runTiltfile(`${original}\nx = f"{SERVICES}"\n`);
    expect(python.problems).toEqual([expect.stringMatching(/f-strings .* is not Starlark/)]);
  });
});
