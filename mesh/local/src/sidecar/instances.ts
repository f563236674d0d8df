import { certificateHashOfPem } from "../identity/index.js";

/**
 * The running workload instances mesh/local knows of: each one a pod's stand-in, with the
 * labels and ServiceAccount of its Deployment and the address of its inbound side. The
 * outbound sides choose endpoints from here, by the destination's `app` label and a subset's
 * labels, as Envoy's EDS endpoints come from istiod.
 */
export interface Instance {
  /** `<deployment>-<n>`: payment-0, payment-v2-0. */
  id: string;
  /** The `app` label: the service it belongs to (its Kubernetes Service's selector). */
  app: string;
  deployment: string;
  version: string;
  labels: Record<string, string>;
  namespace: string;
  serviceAccount: string;
  /** Its mTLS identity as AuthorizationPolicies name it: cluster.local/ns/<ns>/sa/<sa>. */
  principal: string;
}

export interface Endpoint {
  instance: Instance;
  /** The inbound side's address (mTLS). */
  host: string;
  port: number;
  /** Whether the instance answers its readiness probe (unready ones get no traffic). */
  ready: boolean;
  /**
   * How many times it became ready: an unready endpoint leaves the cluster (Kubernetes lists
   * it under notReadyAddresses, which Istio does not push), so each return is a new host to
   * Envoy, without the outlier state of the last one.
   */
  epoch?: number;
}

/** The endpoint as a host of the proxies' clusters: the instance in its current epoch. */
export const hostIdOf = (endpoint: Endpoint) => `${endpoint.instance.id}#${endpoint.epoch ?? 0}`;

export const principalOf = (namespace: string, serviceAccount: string) =>
  `cluster.local/ns/${namespace}/sa/${serviceAccount}`;

/**
 * A workload as Istio's telemetry names it (what its peer metadata carries): the labels of
 * istio_requests_total and the source and destination fields of the access records.
 */
export interface PeerWorkload {
  /** The Deployment: payment, payment-v2 (`*_workload`). */
  workload: string;
  /** The `app` label (`*_app`), "unknown" without one. */
  app: string;
  /** The `version` label (`*_version`), "unknown" without one. */
  version: string;
  /** Kiali's service node (`*_canonical_service`). */
  canonicalService: string;
  /** `*_canonical_revision`. */
  canonicalRevision: string;
  namespace: string;
  principal: string;
}

/**
 * The peer metadata of an instance, by Istio's rules for canonical names:
 * service.istio.io/canonical-name, else app.kubernetes.io/name, else app, else the workload;
 * service.istio.io/canonical-revision, else app.kubernetes.io/version, else version, else
 * "latest".
 */
export function peerWorkloadOf(instance: Instance): PeerWorkload {
  const { labels } = instance;
  return {
    workload: instance.deployment,
    app: labels.app ?? "unknown",
    version: labels.version ?? "unknown",
    canonicalService:
      labels["service.istio.io/canonical-name"] ??
      labels["app.kubernetes.io/name"] ??
      labels.app ??
      instance.deployment,
    canonicalRevision:
      labels["service.istio.io/canonical-revision"] ??
      labels["app.kubernetes.io/version"] ??
      labels.version ??
      "latest",
    namespace: instance.namespace,
    principal: instance.principal,
  };
}

/**
 * The istio ingress gateway's identity, as the shop's AuthorizationPolicies name it, and its
 * pod's labels as Istio's gateway deployment sets them (app, canonical name and revision; no
 * version label).
 */
export const ingressGateway: PeerWorkload = {
  workload: "istio-ingressgateway",
  app: "istio-ingressgateway",
  version: "unknown",
  canonicalService: "istio-ingressgateway",
  canonicalRevision: "latest",
  namespace: "istio-system",
  principal: principalOf("istio-system", "istio-ingressgateway-service-account"),
};

/**
 * Which workload a client certificate was issued to: mesh/local's stand-in for Istio's peer
 * metadata exchange, so an inbound side names its caller's workload and version (payment v1
 * and v2 share one ServiceAccount, so the principal alone cannot tell them apart).
 */
export class PeerDirectory {
  readonly #byCertificate = new Map<string, PeerWorkload>();
  /** A rotated certificate's entry stays: connections made with it may still be open. */
  add(certificatePem: string, peer: PeerWorkload) {
    this.#byCertificate.set(certificateHashOfPem(certificatePem), peer);
  }
  /** The workload of a verified client certificate (XFCC's Hash), if this mesh issued it. */
  of(certificateHash: string | undefined): PeerWorkload | undefined {
    return certificateHash === undefined ? undefined : this.#byCertificate.get(certificateHash);
  }
}

export class EndpointRegistry {
  readonly #endpoints = new Map<string, Endpoint>();

  set(endpoint: Endpoint) {
    this.#endpoints.set(endpoint.instance.id, endpoint);
  }

  setReady(instanceId: string, ready: boolean) {
    const endpoint = this.#endpoints.get(instanceId);
    if (!endpoint) return;
    if (ready && !endpoint.ready) endpoint.epoch = (endpoint.epoch ?? 0) + 1;
    endpoint.ready = ready;
  }

  /** Ready endpoints of a service whose labels include all of `labels`. */
  select(app: string, labels: Record<string, string> = {}): Endpoint[] {
    return [...this.#endpoints.values()].filter(
      (endpoint) =>
        endpoint.ready &&
        endpoint.instance.app === app &&
        Object.entries(labels).every(([key, value]) => endpoint.instance.labels[key] === value),
    );
  }

  all(): Endpoint[] {
    return [...this.#endpoints.values()];
  }
}
