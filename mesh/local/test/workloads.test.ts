import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { readWorkloads } from "../src/workloads.js";

const root = fileURLToPath(new URL("../../..", import.meta.url));

/** What `kubectl kustomize` renders, reduced to what mesh/local reads. */
function rendered(overlay: string) {
  const output = execFileSync("kubectl", ["kustomize", `kustomize/overlays/${overlay}`], {
    cwd: root,
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

  it("dev runs payment v2 next to v1, with the same identity", () => {
    const payment = readWorkloads(root, "dev").filter((w) => w.app === "payment");
    expect(payment.map((w) => [w.deployment, w.version, w.serviceAccount])).toEqual([
      ["payment", "v1", "payment"],
      ["payment-v2", "v2", "payment"],
    ]);
  });
});
