import { existsSync, readFileSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { parseAllDocuments } from "yaml";
import { MeshConfigError } from "./istio.js";

/**
 * The workload instances an overlay declares, read the way kustomize would render them — but
 * only what mesh/local needs of each Deployment: its name, `app` and `version` labels (Kiali,
 * subsets), ServiceAccount (the mTLS identity) and replicas. A laptop has no kubectl, so this
 * reads the kustomizations itself: `resources` and `components` (files and directories),
 * `namespace`, the builtin NamespaceTransformer listed under `transformers` (a file, a
 * kustomization directory, or inline YAML; with `unsetOnly` it sets the namespace only where a
 * resource names none, as kustomize/transformers/namespace does), `replicas`, and patches that
 * set `/spec/replicas`. Other patches and transformers do not change what mesh/local runs
 * (environment, probes, resources) and are left to kustomize.
 * StatefulSets (the laptop clusters' Postgres) are not workloads here: each service gets its
 * database from mesh/local instead.
 */
export interface WorkloadSpec {
  /** The Deployment's name: `payment`, `payment-v2`. */
  deployment: string;
  /** The `app` label: which service (services/<app>) the instances run. */
  app: string;
  /** The `version` label (DestinationRule subsets select by it). */
  version: string;
  labels: Record<string, string>;
  namespace: string;
  serviceAccount: string;
  replicas: number;
}

interface Deployment {
  kind: "Deployment";
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  spec?: {
    replicas?: number;
    template?: {
      metadata?: { labels?: Record<string, string> };
      spec?: { serviceAccountName?: string };
    };
  };
}

interface Kustomization {
  namespace?: string;
  resources?: string[];
  components?: string[];
  transformers?: string[];
  replicas?: { name: string; count: number }[];
  patches?: { target?: { kind?: string; name?: string }; patch?: string; path?: string }[];
}

const kustomizationFiles = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

function yamlDocuments(file: string): unknown[] {
  return parseAllDocuments(readFileSync(file, "utf8"))
    .map((document) => document.toJS() as unknown)
    .filter((value) => value !== null && value !== undefined);
}

function kustomizationIn(dir: string): string {
  const file = kustomizationFiles.map((name) => join(dir, name)).find((f) => existsSync(f));
  if (!file) throw new MeshConfigError(`${dir}: no kustomization file`);
  return file;
}

function isDeployment(value: unknown): value is Deployment {
  return (value as { kind?: unknown } | null)?.kind === "Deployment";
}

/** kustomize's builtin namespace transformer, as a `transformers` entry configures it. */
interface NamespaceTransformer {
  apiVersion: "builtin";
  kind: "NamespaceTransformer";
  metadata?: { name?: string; namespace?: string };
  /** Only set the namespace where a resource has none. */
  unsetOnly?: boolean;
}

function isNamespaceTransformer(value: unknown): value is NamespaceTransformer {
  const object = value as { apiVersion?: unknown; kind?: unknown } | null;
  return object?.apiVersion === "builtin" && object.kind === "NamespaceTransformer";
}

/**
 * Every document a kustomization directory renders from its resources (files and
 * directories), unchanged: what a `transformers` entry naming a directory configures.
 */
function documentsOf(dir: string): unknown[] {
  const file = kustomizationIn(dir);
  const kustomization = (yamlDocuments(file)[0] ?? {}) as Kustomization;
  return (kustomization.resources ?? []).flatMap((entry) => {
    const path = resolve(dir, entry);
    if (!existsSync(path)) throw new MeshConfigError(`${file}: ${entry} does not exist`);
    return statSync(path).isDirectory() ? documentsOf(path) : yamlDocuments(path);
  });
}

/** The NamespaceTransformers of a kustomization's `transformers` entries. */
function namespaceTransformers(file: string, entries: string[]): NamespaceTransformer[] {
  return entries.flatMap((entry) => {
    // An entry that is a YAML mapping is an inline transformer config, anything else a path.
    let documents: unknown[] = parseAllDocuments(entry)
      .map((document) => document.toJS() as unknown)
      .filter((value) => value !== null && value !== undefined);
    const inline =
      documents.length > 0 && documents.every((d) => typeof d === "object" && !Array.isArray(d));
    if (!inline) {
      const path = resolve(dirname(file), entry);
      if (!existsSync(path)) throw new MeshConfigError(`${file}: ${entry} does not exist`);
      documents = statSync(path).isDirectory() ? documentsOf(path) : yamlDocuments(path);
    }
    const transformers = documents.filter(isNamespaceTransformer);
    for (const transformer of transformers) {
      if (!transformer.metadata?.namespace) {
        throw new MeshConfigError(
          `${file}: transformers ${entry}: NamespaceTransformer ${transformer.metadata?.name ?? ""} sets no metadata.namespace`,
        );
      }
    }
    return transformers;
  });
}

/** Deployments of one kustomization directory, its resources and components applied. */
function render(dir: string): Deployment[] {
  const file = kustomizationIn(dir);
  const kustomization = (yamlDocuments(file)[0] ?? {}) as Kustomization;
  const deployments: Deployment[] = [];
  for (const entry of [...(kustomization.resources ?? []), ...(kustomization.components ?? [])]) {
    const path = resolve(dir, entry);
    if (!existsSync(path)) throw new MeshConfigError(`${file}: ${entry} does not exist`);
    if (statSync(path).isDirectory()) deployments.push(...render(path));
    else deployments.push(...yamlDocuments(path).filter(isDeployment));
  }
  for (const deployment of deployments) {
    if (kustomization.namespace) deployment.metadata.namespace = kustomization.namespace;
  }
  for (const transformer of namespaceTransformers(file, kustomization.transformers ?? [])) {
    for (const deployment of deployments) {
      if (transformer.unsetOnly && deployment.metadata.namespace) continue;
      deployment.metadata.namespace = transformer.metadata?.namespace;
    }
  }
  for (const { name, count } of kustomization.replicas ?? []) {
    const deployment = deployments.find((d) => d.metadata.name === name);
    if (deployment) deployment.spec = { ...deployment.spec, replicas: count };
  }
  for (const patch of kustomization.patches ?? []) {
    if (patch.target?.kind !== "Deployment") continue;
    const text = patch.patch ?? readFileSync(resolve(dirname(file), patch.path ?? ""), "utf8");
    const operations = parseOperations(text);
    for (const operation of operations) {
      if (operation.path !== "/spec/replicas") continue;
      for (const deployment of deployments) {
        if (patch.target.name && patch.target.name !== deployment.metadata.name) continue;
        deployment.spec = { ...deployment.spec, replicas: Number(operation.value) };
      }
    }
  }
  return deployments;
}

function parseOperations(text: string): { op?: string; path?: string; value?: unknown }[] {
  const [value] = parseAllDocuments(text).map((d) => d.toJS() as unknown);
  return Array.isArray(value) ? value : [];
}

/** The Deployments of kustomize/overlays/<overlay>, as mesh/local runs them. */
export function readWorkloads(root: string, overlay = "dev"): WorkloadSpec[] {
  const dir = join(root, "kustomize", "overlays", overlay);
  return render(dir).map((deployment) => {
    const labels = {
      ...deployment.metadata.labels,
      ...deployment.spec?.template?.metadata?.labels,
    };
    const where = `kustomize/overlays/${overlay}: Deployment ${deployment.metadata.name}`;
    if (!labels.app || !labels.version) {
      throw new MeshConfigError(`${where}: needs the labels app and version`);
    }
    const serviceAccount = deployment.spec?.template?.spec?.serviceAccountName;
    if (!serviceAccount) {
      throw new MeshConfigError(`${where}: needs a serviceAccountName (its mTLS identity)`);
    }
    return {
      deployment: deployment.metadata.name,
      app: labels.app,
      version: labels.version,
      labels,
      namespace: deployment.metadata.namespace ?? "default",
      serviceAccount,
      replicas: deployment.spec?.replicas ?? 1,
    };
  });
}
