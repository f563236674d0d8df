import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { readWorkloads } from "../src/workloads.js";

const root = fileURLToPath(new URL("../../..", import.meta.url));

/** What `kubectl kustomize` renders, reduced to what mesh/local reads. */
function rendered(overlay: string, at = root) {
  const output = execFileSync("kubectl", ["kustomize", `kustomize/overlays/${overlay}`], {
    cwd: at,
    encoding: "utf8",
  });
  return parseAllDocuments(output)
    .map((d) => d.toJS())
    .filter((o) => o?.kind === "Deployment")
    .map((o) => ({
      deployment: o.metadata.name,
      app: o.spec.template.metadata.labels.app,
      version: o.spec.template.metadata.labels.version,
      namespace: o.metadata.namespace,
      serviceAccount: o.spec.template.spec.serviceAccountName,
      replicas: o.spec.replicas ?? 1,
    }))
    .sort((a, b) => a.deployment.localeCompare(b.deployment));
}

describe("the workloads of an overlay", () => {
  it.each([
    "dev",
    "staging",
    "prod",
  ])("%s: the same Deployments kubectl kustomize renders", (overlay) => {
    const ours = readWorkloads(root, overlay)
      .map(({ labels: _labels, ...rest }) => rest)
      .sort((a, b) => a.deployment.localeCompare(b.deployment));
    expect(ours).toEqual(rendered(overlay));
  });

  it("keeps the overlays' Deployments in namespace shop", () => {
    for (const overlay of ["dev", "staging", "prod"]) {
      expect(new Set(readWorkloads(root, overlay).map((w) => w.namespace))).toEqual(
        new Set(["shop"]),
      );
    }
  });

  it("dev runs payment v2 next to v1, with the same identity", () => {
    const payment = readWorkloads(root, "dev").filter((w) => w.app === "payment");
    expect(payment.map((w) => [w.deployment, w.version, w.serviceAccount])).toEqual([
      ["payment", "v1", "payment"],
      ["payment-v2", "v2", "payment"],
    ]);
  });
});

describe("an overlay's namespace", () => {
  let dir: string | undefined;
  afterEach(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
    dir = undefined;
  });

  const deployment = (name: string, namespace?: string) => `apiVersion: apps/v1
kind: Deployment
metadata:
  name: ${name}
${namespace ? `  namespace: ${namespace}\n` : ""}spec:
  selector:
    matchLabels: { app: ${name} }
  template:
    metadata:
      labels: { app: ${name}, version: v1 }
    spec:
      serviceAccountName: ${name}
      containers: [{ name: ${name}, image: ${name} }]
`;
  const namespaceTransformer = `apiVersion: builtin
kind: NamespaceTransformer
metadata:
  name: shop-namespace
  namespace: shop
unsetOnly: true
`;

  /** A repository root with kustomize/overlays/x/kustomization.yaml and the given files. */
  function repo(kustomization: string, files: Record<string, string> = {}): string {
    dir = mkdtempSync(join(tmpdir(), "thinmesh-workloads-"));
    const all = {
      "kustomize/base/kustomization.yaml": "resources: [deployments.yaml]\n",
      "kustomize/base/deployments.yaml": `${deployment("plain")}---\n${deployment("elsewhere", "other")}`,
      "kustomize/overlays/x/kustomization.yaml": kustomization,
      ...files,
    };
    for (const [path, text] of Object.entries(all)) {
      mkdirSync(dirname(join(dir, path)), { recursive: true });
      writeFileSync(join(dir, path), text);
    }
    return dir;
  }

  const namespaces = (at: string) =>
    Object.fromEntries(readWorkloads(at, "x").map((w) => [w.deployment, w.namespace]));
  const kubectlNamespaces = (at: string) =>
    Object.fromEntries(rendered("x", at).map((w) => [w.deployment, w.namespace]));

  it("the namespace field overwrites a namespace a resource declares", () => {
    const at = repo("resources: [../../base]\nnamespace: shop\n");
    expect(namespaces(at)).toEqual({ plain: "shop", elsewhere: "shop" });
    expect(namespaces(at)).toEqual(kubectlNamespaces(at));
  });

  it.each([
    ["a transformer directory", "transformers: [../../transformers/namespace]\n"],
    ["a transformer file", "transformers: [namespace.yaml]\n"],
    [
      "an inline transformer",
      `transformers:\n  - |-\n${namespaceTransformer.replace(/^/gm, "    ")}\n`,
    ],
  ])("a NamespaceTransformer with unsetOnly keeps it, from %s", (_, transformers) => {
    const at = repo(`resources: [../../base]\n${transformers}`, {
      "kustomize/overlays/x/namespace.yaml": namespaceTransformer,
      "kustomize/transformers/namespace/kustomization.yaml": "resources: [namespace.yaml]\n",
      "kustomize/transformers/namespace/namespace.yaml": namespaceTransformer,
    });
    expect(namespaces(at)).toEqual({ plain: "shop", elsewhere: "other" });
    expect(namespaces(at)).toEqual(kubectlNamespaces(at));
  });

  it("a NamespaceTransformer without unsetOnly overwrites it, like the field", () => {
    const at = repo("resources: [../../base]\ntransformers: [namespace.yaml]\n", {
      "kustomize/overlays/x/namespace.yaml": namespaceTransformer.replace("unsetOnly: true\n", ""),
    });
    expect(namespaces(at)).toEqual({ plain: "shop", elsewhere: "shop" });
    expect(namespaces(at)).toEqual(kubectlNamespaces(at));
  });
});
