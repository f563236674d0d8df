import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parseDocument } from "yaml";
import {
  repoRoot,
  serviceBuildArgs,
  serviceDockerfilePath,
  servicesWithImages,
} from "./dockerfile.js";
import type { Loose } from "./manifests.js";

const file = join(repoRoot, ".github/workflows/ci.yml");
const document = parseDocument(readFileSync(file, "utf8"), { uniqueKeys: true });
const workflow: Loose = document.toJS();

const runs = (job: Loose): string =>
  job.steps.map((s: Loose) => `${s.uses ?? ""} ${s.run ?? ""}`).join("\n");

describe(".github/workflows/ci.yml", () => {
  it("is valid YAML with the shape of a GitHub Actions workflow", () => {
    expect(document.errors).toEqual([]);
    expect(workflow.name).toBeTruthy();
    expect(workflow.on).toHaveProperty("pull_request");
    expect(workflow.on.push.branches).toContain("main");
    for (const [name, job] of Object.entries<Loose>(workflow.jobs)) {
      expect(job["runs-on"], name).toBeTruthy();
      expect(Array.isArray(job.steps), name).toBe(true);
      for (const step of job.steps) {
        expect(Boolean(step.uses) !== Boolean(step.run), `${name}: a step has uses or run`).toBe(
          true,
        );
        if (step.uses)
          expect(step.uses, "actions pinned to a version").toMatch(/^[\w.-]+\/[\w./-]+@v?\d/);
      }
    }
  });

  it("checks and tests on Node.js 22 and 24 against a Postgres service", () => {
    const check = workflow.jobs.check;
    expect(check.strategy.matrix.node).toEqual([22, 24]);
    expect(check.services.postgres.image).toMatch(/^postgres:\d+/);
    expect(check.env.DATABASE_URL).toMatch(/^postgres:\/\/.*@localhost:5432\//);
    const steps = runs(check);
    for (const command of [
      "npm ci",
      "npm run typecheck",
      "npm run lint",
      "npm run lint:proto",
      "buf breaking --against",
      "npm test",
    ]) {
      expect(steps, command).toContain(command);
    }
    expect(
      check.steps.find((s: Loose) => s.uses?.startsWith("actions/checkout")).with["fetch-depth"],
    ).toBe(0);
  });

  it("builds and starts every service's image", () => {
    const image = workflow.jobs.image;
    expect([...image.strategy.matrix.service].sort()).toEqual(servicesWithImages());
    const build = image.steps.find((s: Loose) => s.uses?.startsWith("docker/build-push-action"));
    expect(build.with).toMatchObject({ context: ".", push: false });
    expect(join(repoRoot, build.with.context, build.with.file)).toBe(serviceDockerfilePath);
    // build-args: one NAME=value a line, for the matrix's service.
    const buildArgs = Object.fromEntries(
      String(build.with["build-args"])
        .split("\n")
        .filter(Boolean)
        .map((line) => [line.slice(0, line.indexOf("=")), line.slice(line.indexOf("=") + 1)]),
    );
    // biome-ignore lint/suspicious/noTemplateCurlyInString: a GitHub Actions expression
    expect(buildArgs).toEqual(serviceBuildArgs("${{ matrix.service }}"));
    expect(runs(image)).toMatch(
      /docker run -d [^\n]*\\\n\s*--read-only --tmpfs \/tmp --cap-drop ALL/,
    );
    // The build argument reached the image: its title label names the service.
    expect(runs(image)).toMatch(/org\.opencontainers\.image\.title[\s\S]*= "thinmesh-\$SERVICE"/);
  });
});
