// Shared by the skaffold, Tilt and cluster tests: the overlays as kubectl renders them.
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parse, parseAllDocuments } from "yaml";
import { repoRoot } from "./dockerfile.js";

// biome-ignore lint/suspicious/noExplicitAny: YAML documents, read loosely
export type Loose = any;

export function readYaml(path: string): Loose {
  return parse(readFileSync(join(repoRoot, path), "utf8"));
}

export function hasKubectl(): boolean {
  try {
    execFileSync("kubectl", ["version", "--client"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

const rendered = new Map<string, Loose[]>();

/** The objects of an overlay (kubectl kustomize), cached per test file. */
export function renderOverlay(path: string): Loose[] {
  let objects = rendered.get(path);
  if (!objects) {
    if (!existsSync(join(repoRoot, path, "kustomization.yaml"))) {
      throw new Error(`${path}/kustomization.yaml does not exist`);
    }
    if (!hasKubectl()) throw new Error("kubectl is not installed (needed for `kubectl kustomize`)");
    const yaml = execFileSync("kubectl", ["kustomize", path], {
      cwd: repoRoot,
      encoding: "utf8",
      maxBuffer: 64 * 1024 * 1024,
    });
    objects = parseAllDocuments(yaml)
      .map((d) => d.toJS())
      .filter(Boolean);
    rendered.set(path, objects);
  }
  return objects;
}

/** Every container image an overlay's workloads run. */
export function imagesOf(objects: Loose[]): string[] {
  return objects.flatMap((o) => {
    const pod = o.spec?.template?.spec;
    return [...(pod?.containers ?? []), ...(pod?.initContainers ?? [])].map((c: Loose) => c.image);
  });
}
