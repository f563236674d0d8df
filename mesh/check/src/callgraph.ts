import type { Finding } from "./findings.js";
import type { K8sObject } from "./objects.js";
import {
  type Access,
  type ManifestSource,
  type ProtoService,
  readAccessRules,
  readDeclaredProducers,
  readEventProducers,
  readManifestSources,
  readPeerCalls,
  readProtoServices,
  readSubscriptions,
  readSubscriptionsText,
} from "./sources.js";

/** The Istio ingress gateway's identity (istio-system/istio-ingressgateway-service-account). */
export const ingressPrincipal =
  "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account";

/** What the repository declares, read once and shared by the checks. */
export interface RepoFacts {
  protos: ProtoService[];
  subscriptions: Map<string, string[]>;
  subscriptionsText: string;
  producers: Map<string, string>;
  /** config/subscriptions.yaml's own list of producers (consumers check events against it). */
  declaredProducers: Map<string, string>;
  peerCalls: { caller: string; callee: string; path: string }[];
  access: Map<string, Access>;
  /** The file under mesh/istio or kustomize/ that declares each manifest, by "Kind/name". */
  manifests: Map<string, ManifestSource>;
}

export function loadRepoFacts(root?: string): RepoFacts {
  const protos = readProtoServices(root);
  return {
    protos,
    subscriptions: readSubscriptions(root),
    subscriptionsText: readSubscriptionsText(root),
    producers: readEventProducers(root),
    declaredProducers: readDeclaredProducers(root),
    peerCalls: readPeerCalls(protos, root),
    access: readAccessRules(protos, root),
    manifests: readManifestSources(root),
  };
}

/**
 * One allowed or needed call: who (a principal), to which workload (its app label), and what
 * (an HTTP path, exact or "prefix*", or "port N" for TCP).
 */
export interface Edge {
  caller: string;
  callee: string;
  target: string;
  /** Where the edge comes from, for messages. */
  why: string;
}

export const edgeKey = (e: Pick<Edge, "caller" | "callee" | "target">) =>
  `${shortPrincipal(e.caller)} → ${e.callee} ${e.target}`;

export function shortPrincipal(principal: string): string {
  if (principal === ingressPrincipal) return "ingress";
  return /^cluster\.local\/ns\/shop\/sa\/(.+)$/.exec(principal)?.[1] ?? principal;
}

export const deliverPath = "/shop.events.v1.EventSinkService/Deliver";

const byKind = (objects: K8sObject[], kind: string) => objects.filter((o) => o.kind === kind);

/** A Service's short name from a host: auth, auth.shop, auth.shop.svc.cluster.local. */
export function serviceOfHost(host: string, namespace = "shop"): string | undefined {
  const match = new RegExp(
    `^([a-z0-9-]+)(?:\\.${namespace}(?:\\.svc(?:\\.cluster\\.local)?)?)?$`,
  ).exec(host);
  return match?.[1];
}

/** The workload (app label) a Service sends to, or the Service's name if it has no app. */
function workloadOfService(objects: K8sObject[], service: string): string {
  const svc = byKind(objects, "Service").find((s) => s.metadata.name === service);
  return (svc?.spec?.selector?.app as string | undefined) ?? service;
}

/** The principal of a service's workload: its Deployments' (or StatefulSets') account. */
export function principalOf(objects: K8sObject[], app: string): string {
  const workload = objects.find(
    (o) =>
      (o.kind === "Deployment" || o.kind === "StatefulSet") &&
      o.spec?.template?.metadata?.labels?.app === app,
  );
  const account = (workload?.spec?.template?.spec?.serviceAccountName as string) || app;
  return `cluster.local/ns/shop/sa/${account}`;
}

/** The environment a Deployment's first container gets from ConfigMaps (envFrom) and env. */
export function environmentOf(objects: K8sObject[], deployment: K8sObject): Map<string, string> {
  const env = new Map<string, string>();
  const container = deployment.spec?.template?.spec?.containers?.[0];
  const decode = (value: string) =>
    Buffer.from(value.replace(/\s/g, ""), "base64").toString("utf8");
  for (const from of container?.envFrom ?? []) {
    if (from.configMapRef) {
      const map = byKind(objects, "ConfigMap").find(
        (c) => c.metadata.name === from.configMapRef.name,
      );
      for (const [key, value] of Object.entries((map?.data ?? {}) as Record<string, string>)) {
        env.set(key, value);
      }
    }
    if (from.secretRef) {
      const secret = byKind(objects, "Secret").find((c) => c.metadata.name === from.secretRef.name);
      for (const [key, value] of Object.entries((secret?.data ?? {}) as Record<string, string>)) {
        env.set(key, decode(value));
      }
    }
  }
  for (const variable of container?.env ?? []) {
    if (typeof variable.value === "string") env.set(variable.name, variable.value);
    const ref = variable.valueFrom?.secretKeyRef;
    if (ref) {
      const secret = byKind(objects, "Secret").find((s) => s.metadata.name === ref.name);
      const encoded = secret?.data?.[ref.key] as string | undefined;
      if (encoded !== undefined) {
        env.set(variable.name, decode(encoded));
      }
    }
  }
  return env;
}

/**
 * The call graph the configuration implies:
 * - the ingress routes (VirtualServices bound to a Gateway): ingress → each routed method;
 *   a prefix naming a proto service stands for all its methods, other prefixes stay prefixes;
 * - services/<name>/src/peers.ts: the peer RPCs each service calls;
 * - config/subscriptions.yaml and the producers: producer → consumer EventSinkService/Deliver;
 * - each service's AUTH_JWKS_URL and each RequestAuthentication's jwksUri (fetched by the
 *   sidecar under PILOT_JWT_ENABLE_REMOTE_JWKS=envoy): a GET of the JWKS path;
 * - each service's DATABASE_URL that points at an in-cluster Service: its TCP port.
 */
export function expectedEdges(
  objects: K8sObject[],
  facts: RepoFacts,
): { edges: Edge[]; findings: Finding[] } {
  const edges: Edge[] = [];
  const findings: Finding[] = [];
  const add = (caller: string, calleeService: string, target: string, why: string) =>
    edges.push({ caller, callee: workloadOfService(objects, calleeService), target, why });

  for (const vs of byKind(objects, "VirtualService")) {
    const gateways: string[] = vs.spec?.gateways ?? [];
    if (!gateways.some((g) => g !== "mesh")) continue;
    for (const route of vs.spec?.http ?? []) {
      const hosts = (route.route ?? []).map((r: { destination?: { host?: string } }) =>
        serviceOfHost(r.destination?.host ?? ""),
      );
      const uris = (route.match ?? [{}]).map((m: { uri?: Record<string, string> }) => m.uri);
      for (const host of hosts) {
        if (!host) continue;
        for (const uri of uris) {
          const why = `ingress route ${route.name ?? "(unnamed)"} in VirtualService ${vs.metadata.name}`;
          if (uri?.exact) add(ingressPrincipal, host, uri.exact, why);
          else if (uri?.prefix !== undefined) {
            const service = facts.protos.find((s) => uri.prefix === `/${s.fullName}/`);
            if (service) {
              for (const method of service.methods) {
                add(ingressPrincipal, host, `/${service.fullName}/${method}`, why);
              }
            } else add(ingressPrincipal, host, `${uri.prefix}*`, why);
          } else if (!uri) add(ingressPrincipal, host, "*", why);
          else {
            findings.push({
              check: "call-graph",
              object: `VirtualService ${vs.metadata.name}`,
              message: `route ${route.name ?? "(unnamed)"}: a regex uri match cannot be compared with AuthorizationPolicy paths`,
            });
          }
        }
      }
    }
  }

  for (const call of facts.peerCalls) {
    add(
      principalOf(objects, call.caller),
      call.callee,
      call.path,
      `services/${call.caller}/src/peers.ts`,
    );
  }

  // The consumers refuse an event from anyone but its declared producer: the declaration must
  // say what the services really publish.
  for (const type of new Set([...facts.producers.keys(), ...facts.declaredProducers.keys()])) {
    const declared = facts.declaredProducers.get(type);
    const actual = facts.producers.get(type);
    if (facts.subscriptions.has(type) && declared !== actual) {
      findings.push({
        check: "call-graph",
        message: declared
          ? `config/subscriptions.yaml says ${declared} produces ${type}, but ${actual ? `${actual} does` : "no service does"}`
          : `config/subscriptions.yaml's producers do not name ${type} (${actual} produces it)`,
      });
    }
  }

  for (const [type, consumers] of facts.subscriptions) {
    const producer = facts.producers.get(type);
    if (!producer) {
      findings.push({
        check: "call-graph",
        message: `no service produces ${type} (config/subscriptions.yaml subscribes ${consumers.join(", ")} to it)`,
      });
      continue;
    }
    for (const consumer of consumers) {
      add(
        principalOf(objects, producer),
        consumer,
        deliverPath,
        `${type} (config/subscriptions.yaml)`,
      );
    }
  }

  for (const deployment of byKind(objects, "Deployment")) {
    const app = deployment.spec?.template?.metadata?.labels?.app as string | undefined;
    if (!app) continue;
    const env = environmentOf(objects, deployment);
    const caller = principalOf(objects, app);
    const jwks = env.get("AUTH_JWKS_URL");
    if (jwks) {
      const url = new URL(jwks);
      const host = serviceOfHost(url.hostname);
      if (host) add(caller, host, url.pathname, `AUTH_JWKS_URL of ${app}`);
    }
    const database = env.get("DATABASE_URL");
    if (database) {
      const url = new URL(database);
      const host = serviceOfHost(url.hostname);
      if (host && byKind(objects, "Service").some((s) => s.metadata.name === host)) {
        add(caller, host, `port ${url.port || "5432"}`, `DATABASE_URL of ${app}`);
      }
    }
  }

  for (const ra of byKind(objects, "RequestAuthentication")) {
    const app = ra.spec?.selector?.matchLabels?.app as string | undefined;
    for (const rule of ra.spec?.jwtRules ?? []) {
      if (!app || !rule.jwksUri) continue;
      const url = new URL(rule.jwksUri);
      const host = serviceOfHost(url.hostname);
      if (host)
        add(
          principalOf(objects, app),
          host,
          url.pathname,
          `jwksUri of RequestAuthentication ${ra.metadata.name}`,
        );
    }
  }

  const unique = new Map(edges.map((e) => [edgeKey(e), e]));
  return { edges: [...unique.values()], findings };
}

/** The calls the AuthorizationPolicies allow, one edge per principal × path (or port). */
export function allowedEdges(objects: K8sObject[]): { edges: Edge[]; findings: Finding[] } {
  const edges: Edge[] = [];
  const findings: Finding[] = [];
  for (const policy of byKind(objects, "AuthorizationPolicy")) {
    const where = `AuthorizationPolicy ${policy.metadata.namespace ?? ""}/${policy.metadata.name}`;
    const spec = policy.spec ?? {};
    if (Object.keys(spec).length === 0) continue; // allow-nothing
    if ((spec.action ?? "ALLOW") !== "ALLOW") {
      findings.push({
        check: "call-graph",
        object: where,
        message: `action ${spec.action} is not used by this shop; only ALLOW policies and one allow-nothing policy`,
      });
      continue;
    }
    const callee = spec.selector?.matchLabels?.app as string | undefined;
    if (!callee) {
      findings.push({
        check: "call-graph",
        object: where,
        message: "an ALLOW policy must select one workload (selector.matchLabels.app)",
      });
      continue;
    }
    for (const rule of spec.rules ?? [{}]) {
      const principals: string[] = rule.from
        ? rule.from.flatMap(
            (f: { source?: { principals?: string[] } }) => f.source?.principals ?? ["*"],
          )
        : ["*"];
      const targets: string[] = rule.to
        ? rule.to.flatMap(
            (t: { operation?: { paths?: string[]; ports?: string[] } }) =>
              t.operation?.paths ?? t.operation?.ports?.map((p) => `port ${p}`) ?? ["*"],
          )
        : ["*"];
      for (const from of rule.from ?? []) {
        const unsupported = Object.keys(from.source ?? {}).filter(
          (k) => !["principals", "requestPrincipals"].includes(k),
        );
        if (unsupported.length)
          findings.push({
            check: "call-graph",
            object: where,
            message: `source fields ${unsupported.join(", ")} cannot be compared with the call graph; name principals`,
          });
      }
      for (const to of rule.to ?? []) {
        const unsupported = Object.keys(to.operation ?? {}).filter(
          (k) => !["paths", "ports", "methods"].includes(k),
        );
        if (unsupported.length)
          findings.push({
            check: "call-graph",
            object: where,
            message: `operation fields ${unsupported.join(", ")} cannot be compared with the call graph; name paths`,
          });
      }
      for (const caller of principals) {
        for (const target of targets) edges.push({ caller, callee, target, why: where });
      }
    }
  }
  return { edges, findings };
}
