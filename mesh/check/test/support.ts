import { join } from "node:path";
import {
  buildOverlay,
  IstioSchemas,
  type K8sObject,
  loadRepoFacts,
  type Overlay,
  type RepoFacts,
  readObjects,
  repoRoot,
} from "../src/index.js";

export const fixturesDir = join(repoRoot, "mesh", "check", "test", "fixtures");

/** The objects of test/fixtures/<name>.yaml. */
export const fixture = (name: string): K8sObject[] =>
  readObjects(join(fixturesDir, `${name}.yaml`));

const builds = new Map<Overlay, K8sObject[]>();
/** `kubectl kustomize kustomize/overlays/<overlay>`, once per test file (callers copy). */
export function built(overlay: Overlay): K8sObject[] {
  let objects = builds.get(overlay);
  if (!objects) {
    objects = buildOverlay(overlay);
    builds.set(overlay, objects);
  }
  return structuredClone(objects);
}

let facts: RepoFacts | undefined;
export const repoFacts = (): RepoFacts => {
  facts ??= loadRepoFacts();
  return facts;
};

let istio: IstioSchemas | undefined;
export const istioSchemas = (): IstioSchemas => {
  istio ??= IstioSchemas.load();
  return istio;
};
