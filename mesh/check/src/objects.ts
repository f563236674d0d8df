import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";

/** A Kubernetes object as YAML gives it: only the envelope is typed. */
export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: {
    name: string;
    namespace?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    [key: string]: unknown;
  };
  // biome-ignore lint/suspicious/noExplicitAny: manifests are checked field by field
  spec?: any;
  // biome-ignore lint/suspicious/noExplicitAny: ConfigMap/Secret payloads
  data?: any;
  [key: string]: unknown;
}

/** The repository root (mesh/check/src → ../../..). */
export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");

export const overlays = ["dev", "staging", "prod"] as const;
export type Overlay = (typeof overlays)[number];

/** "Deployment shop/auth": how findings name an object. */
export function describe(object: Pick<K8sObject, "kind" | "metadata">): string {
  const ns = object.metadata?.namespace;
  return `${object.kind} ${ns ? `${ns}/` : ""}${object.metadata?.name}`;
}

/** Every non-empty YAML document of a text, as objects. Throws on a YAML syntax error. */
export function parseObjects(text: string, source: string): K8sObject[] {
  const objects: K8sObject[] = [];
  for (const document of parseAllDocuments(text)) {
    if (document.errors.length) {
      throw new Error(`${source}: ${document.errors[0]?.message}`);
    }
    const value = document.toJS() as K8sObject | null;
    if (value) objects.push(value);
  }
  return objects;
}

export function readObjects(file: string): K8sObject[] {
  return parseObjects(readFileSync(file, "utf8"), file);
}

/**
 * `kubectl kustomize <dir>`: the objects an overlay renders. Throws with kustomize's own
 * message when the build fails.
 */
export function kustomizeBuild(dir: string): K8sObject[] {
  if (!existsSync(dir)) throw new Error(`no kustomization at ${dir}`);
  let output: string;
  try {
    output = execFileSync("kubectl", ["kustomize", dir], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
      maxBuffer: 64 * 1024 * 1024,
    });
  } catch (error) {
    const failure = error as { stderr?: string; code?: string; message: string };
    if (failure.code === "ENOENT") {
      throw new Error("kubectl is not installed (needed for `kubectl kustomize`)");
    }
    throw new Error(
      `kubectl kustomize ${dir} failed: ${failure.stderr?.trim() || failure.message}`,
    );
  }
  return parseObjects(output, `kubectl kustomize ${dir}`);
}

export function buildOverlay(overlay: Overlay, root = repoRoot): K8sObject[] {
  return kustomizeBuild(join(root, "kustomize", "overlays", overlay));
}

const identity = (o: Pick<K8sObject, "kind" | "metadata">) =>
  `${o.kind}/${o.metadata?.namespace ?? ""}/${o.metadata?.name}`;

/**
 * The objects with each replacement swapped in for the object of the same kind, namespace and
 * name (added when there is none). A replacement named like a generator's output without the
 * hash ("catalog-config") replaces the hashed object ("catalog-config-7f9c2bd8mh"), keeping the
 * hashed name so references still resolve. Fixtures use this to break one resource of a build.
 */
export function withReplacements(objects: K8sObject[], replacements: K8sObject[]): K8sObject[] {
  const result = [...objects];
  for (const replacement of replacements) {
    let index = result.findIndex((o) => identity(o) === identity(replacement));
    if (index < 0) {
      index = result.findIndex(
        (o) =>
          o.kind === replacement.kind &&
          (o.metadata?.namespace ?? "") === (replacement.metadata?.namespace ?? "") &&
          new RegExp(`^${replacement.metadata?.name}-[a-z0-9]{10}$`).test(o.metadata?.name),
      );
      if (index >= 0) {
        const hashed = result[index]!.metadata.name;
        result[index] = { ...replacement, metadata: { ...replacement.metadata, name: hashed } };
        continue;
      }
      result.push(replacement);
    } else result[index] = replacement;
  }
  return result;
}

/** The objects without those of the given kind and name (any namespace). */
export function without(objects: K8sObject[], kind: string, name: string): K8sObject[] {
  return objects.filter((o) => !(o.kind === kind && o.metadata?.name === name));
}
