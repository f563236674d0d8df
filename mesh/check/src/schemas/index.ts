import type { Finding } from "../findings.js";
import { describe, type K8sObject } from "../objects.js";
import type { IstioSchemas } from "./istio.js";
import { isKubernetesKind, typecheckObjects, validateWithModels } from "./kubernetes.js";

export { IstioSchemas, istioCrdPath } from "./istio.js";

/**
 * Validates every object against its schema: Istio kinds against Istio's CRDs (unknown fields
 * rejected, CEL rules applied), Kubernetes kinds against Kubernetes' models (unknown fields
 * rejected). An object of any other kind is itself a finding.
 */
export function validateSchemas(objects: K8sObject[], istio: IstioSchemas): Finding[] {
  const findings: Finding[] = [];
  const kubernetes: K8sObject[] = [];
  const envelopes: K8sObject[] = [];
  for (const object of objects) {
    if (typeof object !== "object" || object === null || !object.kind || !object.apiVersion) {
      findings.push({ check: "schema", message: "a document without apiVersion and kind" });
    } else if (istio.handles(object)) {
      findings.push(...istio.validate(object));
      envelopes.push(object);
    } else if (isKubernetesKind(object)) {
      findings.push(...validateWithModels(object));
      kubernetes.push(object);
    } else {
      findings.push({
        check: "schema",
        object: describe(object),
        message: `no schema known for ${object.apiVersion} ${object.kind}`,
      });
    }
  }
  findings.push(...typecheckObjects(kubernetes, envelopes));
  return findings;
}
