/**
 * PeerAuthentication as Istio resolves it for a workload's inbound side: a policy whose selector
 * matches the workload wins over the namespace-wide one (no selector, or empty matchLabels); the
 * first in file order wins within a level (Istio: the oldest). Mode UNSET (or no `mtls`)
 * inherits from the next level; with nothing set Istio's default is PERMISSIVE. STRICT refuses
 * plaintext, PERMISSIVE accepts mTLS and plaintext, DISABLE accepts plaintext only. There is no
 * mesh-wide (root-namespace) level locally, and portLevelMtls is refused at load.
 */
import type { Workload } from "./authz.js";
import type { MeshConfig, PeerAuthentication } from "./config.js";

export type MtlsMode = "STRICT" | "PERMISSIVE" | "DISABLE";

export function mtlsModeFor(config: MeshConfig, workload: Workload): MtlsMode {
  const inNamespace = config.peerAuthentications.filter(
    (p) => (p.metadata.namespace ?? config.namespace) === workload.namespace,
  );
  // Istio's ComposePeerAuthentication: no selector or empty matchLabels is the namespace level.
  const namespaceWide = (p: PeerAuthentication) =>
    Object.keys(p.spec.selector?.matchLabels ?? {}).length === 0;
  const selects = (p: PeerAuthentication) =>
    Object.entries(p.spec.selector?.matchLabels ?? {}).every(([k, v]) => workload.labels[k] === v);
  const levels = [
    inNamespace.find((p) => !namespaceWide(p) && selects(p)),
    inNamespace.find(namespaceWide),
  ];
  for (const policy of levels) {
    const mode = policy?.spec.mtls?.mode;
    if (mode && mode !== "UNSET") return mode;
  }
  return "PERMISSIVE";
}
