import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import {
  applyVariant,
  loadMeshConfig,
  type MeshConfig,
  parseResources,
  readResources,
} from "../../src/mesh/config.js";

export const repoMesh = fileURLToPath(new URL("../../../istio", import.meta.url));
export const variantsDir = `${repoMesh}/variants`;
export const variantFiles = readdirSync(variantsDir).filter((f) => f.endsWith(".yaml"));

/** mesh/istio as committed. */
export const repoConfig = (): MeshConfig => loadMeshConfig(repoMesh);

/** mesh/istio with variants/<file> applied over it. */
export function variantConfig(file: string): MeshConfig {
  const variant = parseResources(
    readFileSync(`${variantsDir}/${file}`, "utf8"),
    `variants/${file}`,
  );
  return loadMeshConfig(repoMesh, applyVariant(readResources(repoMesh), variant));
}

/** A config from YAML text (one file, `mesh.yaml`), on top of the repository's Gateway. */
export function configFrom(yaml: string, { withRepo = false } = {}): MeshConfig {
  const base = withRepo
    ? readResources(repoMesh)
    : readResources(repoMesh).filter(
        (r) => r.kind === "Gateway" || r.metadata?.name === "shop-ingress",
      );
  return loadMeshConfig(repoMesh, applyVariant(base, parseResources(yaml, "mesh.yaml")));
}

/** A header lookup from a plain record (names lower-case, as HTTP/2 and Node give them). */
export const headers =
  (values: Record<string, string> = {}) =>
  (name: string): string | undefined =>
    values[name.toLowerCase()];

/** A seeded Lehmer generator: the same sequence every run. */
export function seeded(seed = 1): () => number {
  let state = seed;
  return () => {
    state = (state * 16807) % 2147483647;
    return state / 2147483647;
  };
}
