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

/** The istio ingress gateway's identity, as the shop's AuthorizationPolicies name it. */
export const ingressGateway = {
  workload: "istio-ingressgateway",
  version: "unknown",
  namespace: "istio-system",
  principal: principalOf("istio-system", "istio-ingressgateway-service-account"),
} as const;

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
