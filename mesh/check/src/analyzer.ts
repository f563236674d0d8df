import { istioDurationProblem, parseDuration } from "../../local/src/mesh/duration.js";
import {
  allowedEdges,
  edgeKey,
  environmentOf,
  expectedEdges,
  ingressPrincipal,
  type RepoFacts,
  serviceOfHost,
} from "./callgraph.js";
import type { Finding } from "./findings.js";
import { describe, type K8sObject } from "./objects.js";

/**
 * The mesh analyzer: checks a rendered overlay (the objects `kubectl kustomize` prints)
 * against Istio's semantics, the shop's call graph and its workload rules. Every check
 * returns findings that name the object and say what to fix; an empty list means it passes.
 */
export const checks = {
  routing: checkRouting,
  "istio-rules": checkIstioRules,
  principals: checkPrincipals,
  "call-graph": checkCallGraph,
  "edge-tokens": checkEdgeTokens,
  mtls: checkMtls,
  "service-ports": checkServicePorts,
  workloads: checkWorkloads,
  configuration: checkConfiguration,
  "envoy-filters": checkEnvoyFilters,
} satisfies Record<string, (objects: K8sObject[], facts: RepoFacts) => Finding[]>;

export type CheckName = keyof typeof checks;

export function analyze(objects: K8sObject[], facts: RepoFacts, only?: CheckName[]): Finding[] {
  const names = only ?? (Object.keys(checks) as CheckName[]);
  return names.flatMap((name) => checks[name](objects, facts));
}

// biome-ignore lint/suspicious/noExplicitAny: manifest trees
type Tree = any;

const kind = (objects: K8sObject[], k: string) => objects.filter((o) => o.kind === k);
const inMesh = (o: K8sObject) => (o.metadata.namespace ?? "shop") === "shop";
const selects = (
  selector: Record<string, string> | undefined,
  labels: Record<string, string> | undefined,
) => !!selector && Object.entries(selector).every(([k, v]) => labels?.[k] === v);
const podLabels = (workload: K8sObject): Record<string, string> =>
  workload.spec?.template?.metadata?.labels ?? {};
const workloads = (objects: K8sObject[]) =>
  objects.filter((o) => o.kind === "Deployment" || o.kind === "StatefulSet");

/** VirtualService hosts, destinations, subsets and weights resolve to something real. */
function checkRouting(objects: K8sObject[]): Finding[] {
  const findings: Finding[] = [];
  const services = kind(objects, "Service");
  const rules = kind(objects, "DestinationRule");
  const serviceNamed = (host: string) => {
    const name = serviceOfHost(host);
    return services.find((s) => s.metadata.name === name);
  };
  for (const dr of rules) {
    if (!serviceNamed(dr.spec?.host ?? "")) {
      findings.push({
        check: "routing",
        object: describe(dr),
        message: `host ${dr.spec?.host} is not a Service in namespace shop`,
      });
    }
  }
  for (const vs of kind(objects, "VirtualService")) {
    const where = describe(vs);
    const boundToGateway = (vs.spec?.gateways ?? []).some((g: string) => g !== "mesh");
    if (!boundToGateway) {
      for (const host of vs.spec?.hosts ?? []) {
        if (!serviceNamed(host))
          findings.push({
            check: "routing",
            object: where,
            message: `host ${host} is not a Service in namespace shop`,
          });
      }
    }
    for (const [index, route] of (vs.spec?.http ?? []).entries() as Iterable<[number, Tree]>) {
      const label = `http[${index}]${route.name ? ` (${route.name})` : ""}`;
      const destinations: Tree[] = route.route ?? [];
      const weights = destinations.map((d) => d.weight ?? (destinations.length === 1 ? 100 : 0));
      const total = weights.reduce((a: number, b: number) => a + b, 0);
      if (destinations.length > 0 && total !== 100) {
        findings.push({
          check: "routing",
          object: where,
          message: `${label}: weights add up to ${total}, not 100 (${weights.join(" + ")})`,
        });
      }
      for (const [d, destination] of destinations.entries()) {
        const host: string = destination.destination?.host ?? "";
        const service = serviceNamed(host);
        const at = `${label}.route[${d}]`;
        if (!service) {
          findings.push({
            check: "routing",
            object: where,
            message: `${at}: destination host ${host} is not a Service in namespace shop`,
          });
          continue;
        }
        const port = destination.destination?.port?.number;
        if (port !== undefined && !(service.spec?.ports ?? []).some((p: Tree) => p.port === port)) {
          findings.push({
            check: "routing",
            object: where,
            message: `${at}: Service ${service.metadata.name} has no port ${port}`,
          });
        }
        const weight = weights[d]!;
        if (weight < 0 || weight > 100) {
          findings.push({
            check: "routing",
            object: where,
            message: `${at}: weight ${weight} is not between 0 and 100`,
          });
        }
        const subsetName: string | undefined = destination.destination?.subset;
        const candidates = workloads(objects).filter((w) =>
          selects(service.spec?.selector, podLabels(w)),
        );
        if (!subsetName) {
          if (weight > 0 && candidates.length === 0) {
            findings.push({
              check: "routing",
              object: where,
              message: `${at}: Service ${service.metadata.name} selects no Deployment`,
            });
          }
          continue;
        }
        const rule = rules.find((r) => serviceOfHost(r.spec?.host ?? "") === service.metadata.name);
        const subset = (rule?.spec?.subsets ?? []).find((s: Tree) => s.name === subsetName);
        if (!subset) {
          findings.push({
            check: "routing",
            object: where,
            message: `${at}: subset ${subsetName} is not defined by a DestinationRule for ${service.metadata.name}`,
          });
          continue;
        }
        // A subset that gets traffic must have pods behind it; one at weight 0 may be empty
        // (the canary's v2 before it is deployed).
        if (weight > 0 && !candidates.some((w) => selects(subset.labels, podLabels(w)))) {
          findings.push({
            check: "routing",
            object: where,
            message: `${at}: subset ${subsetName} (${Object.entries(subset.labels ?? {})
              .map(([k, v]) => `${k}=${v}`)
              .join(
                ", ",
              )}) of ${service.metadata.name} gets weight ${weight} but selects no Deployment`,
          });
        }
      }
    }
  }
  return findings;
}

/** Envoy retryOn tokens Istio accepts (its validation's supportedRetryOnPolicies). */
const retryOnPolicies = new Set([
  "5xx",
  "gateway-error",
  "reset",
  "reset-before-request",
  "connect-failure",
  "retriable-4xx",
  "refused-stream",
  "retriable-status-codes",
  "retriable-headers",
  "envoy-ratelimited",
  "http3-post-connect-failure",
  "cancelled",
  "deadline-exceeded",
  "internal",
  "resource-exhausted",
  "unavailable",
]);
/** Istio's retryOn when a retries block names none. */
const defaultRetryOn =
  "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";

/**
 * Istio's own validation rules for the fields we use (durations, retries, faults), plus the
 * Envoy semantics that make a setting meaningless (a per-try timeout nobody retries).
 */
function checkIstioRules(objects: K8sObject[]): Finding[] {
  const findings: Finding[] = [];
  const duration = (where: string, field: string, value: unknown) => {
    if (value === undefined) return;
    const problem = istioDurationProblem(value);
    if (problem)
      findings.push({ check: "istio-rules", object: where, message: `${field}: ${problem}` });
  };
  for (const vs of kind(objects, "VirtualService")) {
    const where = describe(vs);
    for (const [index, route] of (vs.spec?.http ?? []).entries() as Iterable<[number, Tree]>) {
      const at = `http[${index}]${route.name ? ` (${route.name})` : ""}`;
      duration(where, `${at}.timeout`, route.timeout);
      const retries = route.retries;
      if (retries) {
        const attempts = retries.attempts ?? 0;
        if (attempts < 0)
          findings.push({
            check: "istio-rules",
            object: where,
            message: `${at}.retries.attempts: attempts cannot be negative`,
          });
        if (
          attempts === 0 &&
          (retries.perTryTimeout !== undefined ||
            retries.retryOn ||
            retries.retryRemoteLocalities !== undefined)
        ) {
          findings.push({
            check: "istio-rules",
            object: where,
            message: `${at}.retries: http retry policy configured when attempts are set to 0 (disabled)`,
          });
        }
        duration(where, `${at}.retries.perTryTimeout`, retries.perTryTimeout);
        duration(where, `${at}.retries.backoff`, retries.backoff);
        const retryOn: string = retries.retryOn ?? "";
        for (const policy of retryOn ? retryOn.split(",") : []) {
          const code = Number(policy);
          const isStatus = /^\d+$/.test(policy) && code >= 100 && code <= 599;
          if (!isStatus && !retryOnPolicies.has(policy)) {
            findings.push({
              check: "istio-rules",
              object: where,
              message: `${at}.retries.retryOn: "${policy}" is not a valid retryOn policy (no spaces; Envoy tokens or HTTP status codes)`,
            });
          }
        }
        if (retries.perTryTimeout !== undefined && attempts > 0) {
          const effective = (retryOn || defaultRetryOn).split(",");
          if (!effective.some((p) => p === "5xx" || p === "gateway-error" || p === "reset")) {
            findings.push({
              check: "istio-rules",
              object: where,
              message: `${at}.retries.perTryTimeout ${retries.perTryTimeout} is never retried: retryOn "${retryOn || `(default) ${defaultRetryOn}`}" has none of 5xx, gateway-error, reset`,
            });
          }
          const perTry = parseDuration(retries.perTryTimeout);
          const total = parseDuration(route.timeout);
          if (perTry !== undefined && total !== undefined && perTry >= total) {
            findings.push({
              check: "istio-rules",
              object: where,
              message: `${at}.retries.perTryTimeout ${retries.perTryTimeout} is not below the route timeout ${route.timeout}, so no retry ever happens`,
            });
          }
        }
      }
      const fault = route.fault;
      if (fault) {
        if (!fault.abort && !fault.delay)
          findings.push({
            check: "istio-rules",
            object: where,
            message: `${at}.fault: HTTP fault injection must have an abort and/or a delay`,
          });
        for (const [type, spec] of [
          ["abort", fault.abort],
          ["delay", fault.delay],
        ] as const) {
          if (!spec) continue;
          const value = spec.percentage?.value;
          if (value === undefined)
            findings.push({
              check: "istio-rules",
              object: where,
              message: `${at}.fault.${type}: no percentage, so nothing is injected`,
            });
          else if (value < 0 || value > 100 || (value > 0 && value < 0.0001))
            findings.push({
              check: "istio-rules",
              object: where,
              message: `${at}.fault.${type}.percentage ${value} is neither 0.0, nor in range [0.0001, 100.0]`,
            });
        }
        duration(where, `${at}.fault.delay.fixedDelay`, fault.delay?.fixedDelay);
        const status = fault.abort?.httpStatus;
        if (status !== undefined && (status < 200 || status > 599))
          findings.push({
            check: "istio-rules",
            object: where,
            message: `${at}.fault.abort: HTTP status ${status} is not in range 200-599`,
          });
      }
    }
  }
  for (const dr of kind(objects, "DestinationRule")) {
    const where = describe(dr);
    const policies: [string, Tree][] = [["trafficPolicy", dr.spec?.trafficPolicy]];
    for (const subset of dr.spec?.subsets ?? [])
      policies.push([`subsets.${subset.name}.trafficPolicy`, subset.trafficPolicy]);
    for (const [at, policy] of policies) {
      if (!policy) continue;
      duration(
        where,
        `${at}.connectionPool.tcp.connectTimeout`,
        policy.connectionPool?.tcp?.connectTimeout,
      );
      duration(
        where,
        `${at}.connectionPool.http.idleTimeout`,
        policy.connectionPool?.http?.idleTimeout,
      );
      duration(where, `${at}.outlierDetection.interval`, policy.outlierDetection?.interval);
      duration(
        where,
        `${at}.outlierDetection.baseEjectionTime`,
        policy.outlierDetection?.baseEjectionTime,
      );
      const percent = policy.outlierDetection?.maxEjectionPercent;
      if (percent !== undefined && (percent < 0 || percent > 100))
        findings.push({
          check: "istio-rules",
          object: where,
          message: `${at}.outlierDetection.maxEjectionPercent ${percent} is not in range 0..100`,
        });
    }
  }
  return findings;
}

/** Every principal an AuthorizationPolicy names is a ServiceAccount here, or the ingress. */
function checkPrincipals(objects: K8sObject[]): Finding[] {
  const findings: Finding[] = [];
  const accounts = new Set(
    kind(objects, "ServiceAccount").map(
      (s) => `cluster.local/ns/${s.metadata.namespace ?? "shop"}/sa/${s.metadata.name}`,
    ),
  );
  for (const policy of kind(objects, "AuthorizationPolicy")) {
    for (const rule of policy.spec?.rules ?? []) {
      for (const from of rule.from ?? []) {
        for (const principal of [
          ...(from.source?.principals ?? []),
          ...(from.source?.notPrincipals ?? []),
        ]) {
          if (principal !== ingressPrincipal && !accounts.has(principal)) {
            findings.push({
              check: "principals",
              object: describe(policy),
              message: `principal ${principal} is not a ServiceAccount of this build (nor the ingress gateway ${ingressPrincipal})`,
            });
          }
        }
      }
    }
  }
  return findings;
}

/**
 * The allowed (caller, callee, path) edges equal the call graph the configuration implies:
 * nothing missing, nothing extra. Also: a default-deny policy exists.
 */
function checkCallGraph(objects: K8sObject[], facts: RepoFacts): Finding[] {
  const findings: Finding[] = [];
  const policies = kind(objects, "AuthorizationPolicy").filter(inMesh);
  if (!policies.some((p) => !p.spec || Object.keys(p.spec).length === 0)) {
    findings.push({
      check: "call-graph",
      message:
        "no allow-nothing AuthorizationPolicy (spec: {}) in namespace shop: anything not allowed explicitly would be allowed",
    });
  }
  const expected = expectedEdges(objects, facts);
  const allowed = allowedEdges(policies);
  findings.push(...expected.findings, ...allowed.findings);
  const want = new Map(expected.edges.map((e) => [edgeKey(e), e]));
  const have = new Map(allowed.edges.map((e) => [edgeKey(e), e]));
  const missing = [...want.keys()].filter((k) => !have.has(k)).sort();
  const extra = [...have.keys()].filter((k) => !want.has(k)).sort();
  if (missing.length || extra.length) {
    const lines = [
      "the AuthorizationPolicies do not allow exactly the call graph",
      ...missing.map((k) => `  missing (needed by ${want.get(k)!.why}, no policy allows it): ${k}`),
      ...extra.map(
        (k) =>
          `  extra (allowed by ${have.get(k)!.why}, nothing in the configuration calls it): ${k}`,
      ),
    ];
    findings.push({ check: "call-graph", message: lines.join("\n") });
  }
  return findings;
}

/**
 * At the edge, RPCs that need an access token (access "authenticated" or a role, as the
 * services declare) are allowed only with requestPrincipals (and the role as a claim
 * condition); public ones without; internal ones not at all. Every requestPrincipals issuer
 * has a RequestAuthentication on that workload, or every token would be refused.
 */
function checkEdgeTokens(objects: K8sObject[], facts: RepoFacts): Finding[] {
  const findings: Finding[] = [];
  const withoutToken = new Map<string, string>();
  const withToken = new Map<string, { roles: string[]; where: string }>();
  for (const policy of kind(objects, "AuthorizationPolicy")) {
    const app = policy.spec?.selector?.matchLabels?.app;
    for (const rule of policy.spec?.rules ?? []) {
      const paths: string[] = (rule.to ?? []).flatMap((t: Tree) => t.operation?.paths ?? []);
      const roles: string[] = (rule.when ?? [])
        .filter((w: Tree) => w.key === "request.auth.claims[roles]")
        .flatMap((w: Tree) => w.values ?? []);
      for (const from of rule.from ?? []) {
        const source = from.source ?? {};
        const issuers: string[] = (source.requestPrincipals ?? []).map((p: string) =>
          p.replace(/\/[^/]*$/, ""),
        );
        for (const issuer of issuers) {
          const authenticated = kind(objects, "RequestAuthentication").some(
            (ra) =>
              selects(ra.spec?.selector?.matchLabels, { app }) &&
              (ra.spec?.jwtRules ?? []).some((r: Tree) => r.issuer === issuer),
          );
          if (!authenticated)
            findings.push({
              check: "edge-tokens",
              object: describe(policy),
              message: `requestPrincipals of issuer ${issuer}, but no RequestAuthentication for app ${app} accepts that issuer: every request would be denied`,
            });
        }
        if (!(source.principals ?? []).includes(ingressPrincipal)) continue;
        for (const path of paths) {
          if (issuers.length) withToken.set(path, { roles, where: describe(policy) });
          else withoutToken.set(path, describe(policy));
        }
      }
    }
  }
  for (const [path, access] of facts.access) {
    const open = withoutToken.get(path);
    const guarded = withToken.get(path);
    if (access === "internal" && (open || guarded)) {
      findings.push({
        check: "edge-tokens",
        object: open ?? guarded!.where,
        message: `${path} is internal (services' access rules) but the ingress gateway may call it`,
      });
    } else if (access === "public" && guarded && !open) {
      findings.push({
        check: "edge-tokens",
        object: guarded.where,
        message: `${path} is public but the edge demands a token (requestPrincipals)`,
      });
    } else if (access === "authenticated" || typeof access === "object") {
      if (open)
        findings.push({
          check: "edge-tokens",
          object: open,
          message: `${path} needs an access token but the edge allows it without requestPrincipals`,
        });
      if (typeof access === "object" && guarded && !guarded.roles.includes(access.role)) {
        findings.push({
          check: "edge-tokens",
          object: guarded.where,
          message: `${path} needs role ${access.role}: add when request.auth.claims[roles] in [${access.role}]`,
        });
      }
    }
  }
  return findings;
}

/** STRICT mTLS for the whole namespace, no weaker PeerAuthentication or DestinationRule TLS. */
function checkMtls(objects: K8sObject[]): Finding[] {
  const findings: Finding[] = [];
  const peer = kind(objects, "PeerAuthentication");
  const namespaceWide = peer.filter(
    (p) => (p.metadata.namespace ?? "shop") === "shop" && !p.spec?.selector,
  );
  if (!namespaceWide.some((p) => p.spec?.mtls?.mode === "STRICT")) {
    findings.push({
      check: "mtls",
      message: "no namespace-wide PeerAuthentication with mtls.mode STRICT in namespace shop",
    });
  }
  for (const p of peer) {
    const modes = [
      p.spec?.mtls?.mode,
      ...Object.values((p.spec?.portLevelMtls ?? {}) as Record<string, Tree>).map((m) => m?.mode),
    ];
    for (const mode of modes) {
      if (mode && mode !== "STRICT" && mode !== "UNSET") {
        findings.push({
          check: "mtls",
          object: describe(p),
          message: `mTLS mode ${mode} weakens the namespace's STRICT mTLS`,
        });
      }
    }
  }
  for (const dr of kind(objects, "DestinationRule")) {
    const mode = dr.spec?.trafficPolicy?.tls?.mode;
    if (mode !== "ISTIO_MUTUAL") {
      findings.push({
        check: "mtls",
        object: describe(dr),
        message: `trafficPolicy.tls.mode is ${mode ?? "unset"}, not ISTIO_MUTUAL`,
      });
    }
  }
  return findings;
}

/** Istio picks a protocol by port name prefix or appProtocol; every Service port has one. */
const protocols = [
  "http",
  "http2",
  "https",
  "grpc",
  "grpc-web",
  "tcp",
  "tls",
  "mongo",
  "mysql",
  "redis",
  "udp",
];
function checkServicePorts(objects: K8sObject[]): Finding[] {
  const findings: Finding[] = [];
  for (const service of kind(objects, "Service")) {
    for (const port of service.spec?.ports ?? []) {
      const byName = protocols.some((p) => port.name === p || port.name?.startsWith(`${p}-`));
      if (!port.appProtocol && !byName) {
        findings.push({
          check: "service-ports",
          object: describe(service),
          message: `port ${port.port}${port.name ? ` (${port.name})` : ""} carries no protocol: name it <protocol>[-suffix] (http2, grpc, tcp-…) or set appProtocol`,
        });
      }
    }
  }
  return findings;
}

const requiredLabels = [
  "app",
  "version",
  "app.kubernetes.io/name",
  "app.kubernetes.io/version",
  "app.kubernetes.io/part-of",
  "app.kubernetes.io/component",
];

/** Labels, identity, probes, resources and the restricted security context of every Deployment. */
function checkWorkloads(objects: K8sObject[]): Finding[] {
  const findings: Finding[] = [];
  const accounts = new Set(kind(objects, "ServiceAccount").map((s) => s.metadata.name));
  for (const deployment of kind(objects, "Deployment")) {
    const where = describe(deployment);
    const problem = (message: string) =>
      findings.push({ check: "workloads", object: where, message });
    const pod: Tree = deployment.spec?.template ?? {};
    for (const [place, labels] of [
      ["metadata.labels", deployment.metadata.labels],
      ["spec.template.metadata.labels", pod.metadata?.labels],
    ] as const) {
      const absent = requiredLabels.filter((l) => !labels?.[l]);
      if (absent.length) problem(`${place} lack ${absent.join(", ")}`);
    }
    if (!selects(deployment.spec?.selector?.matchLabels, pod.metadata?.labels))
      problem("spec.selector.matchLabels do not match the pod template's labels");
    const services = kind(objects, "Service").filter((s) =>
      selects(s.spec?.selector, pod.metadata?.labels),
    );
    if (services.length === 0) problem("no Service selects its pods");
    for (const service of services) {
      if (!selects(service.spec.selector, deployment.metadata.labels))
        problem(
          `Service ${service.metadata.name}'s selector is not a subset of the Deployment's own labels (Kiali)`,
        );
    }
    const spec: Tree = pod.spec ?? {};
    const account = spec.serviceAccountName;
    if (!account || account === "default")
      problem("spec.template.spec.serviceAccountName: a workload needs its own ServiceAccount");
    else if (!accounts.has(account)) problem(`ServiceAccount ${account} is not in the build`);
    const env = environmentOf(objects, deployment);
    const grace = Number(env.get("SHUTDOWN_GRACE_MS") ?? 10_000);
    const period = spec.terminationGracePeriodSeconds ?? 30;
    if (period * 1000 <= grace)
      problem(
        `terminationGracePeriodSeconds ${period} is not above SHUTDOWN_GRACE_MS ${grace}: the drain would be killed`,
      );
    const podSecurity: Tree = spec.securityContext ?? {};
    for (const container of (spec.containers ?? []) as Tree[]) {
      const at = `container ${container.name}`;
      const port = (container.ports ?? []).find((p: Tree) => p.containerPort === 8080);
      if (!port?.name) problem(`${at}: port 8080 is not declared with a name`);
      const probes: [string, string][] = [
        ["startupProbe", "/readyz"],
        ["readinessProbe", "/readyz"],
        ["livenessProbe", "/healthz"],
      ];
      for (const [probe, path] of probes) {
        if (container[probe]?.httpGet?.path !== path)
          problem(`${at}: ${probe} must be an httpGet of ${path}`);
      }
      for (const type of ["requests", "limits"]) {
        for (const resource of ["cpu", "memory"]) {
          if (!container.resources?.[type]?.[resource])
            problem(`${at}: resources.${type}.${resource} is not set`);
        }
      }
      const security: Tree = container.securityContext ?? {};
      const either = (key: string) => security[key] ?? podSecurity[key];
      if (either("runAsNonRoot") !== true) problem(`${at}: runAsNonRoot is not true`);
      const user = either("runAsUser");
      if (user === undefined || user === 0) problem(`${at}: runAsUser must be a non-zero UID`);
      if (security.readOnlyRootFilesystem !== true)
        problem(`${at}: securityContext.readOnlyRootFilesystem is not true`);
      if (security.allowPrivilegeEscalation !== false)
        problem(`${at}: securityContext.allowPrivilegeEscalation is not false`);
      if (!(security.capabilities?.drop ?? []).includes("ALL"))
        problem(`${at}: securityContext.capabilities.drop does not include ALL`);
      if (security.capabilities?.add?.length)
        problem(`${at}: securityContext.capabilities.add must be empty`);
      if (either("seccompProfile")?.type !== "RuntimeDefault")
        problem(`${at}: seccompProfile.type is not RuntimeDefault`);
      if (!(container.volumeMounts ?? []).some((m: Tree) => m.mountPath === "/tmp"))
        problem(`${at}: no writable /tmp (the root filesystem is read-only)`);
    }
  }
  return findings;
}

/**
 * Each service's configuration points at what exists: peer and subscriber URLs at Services
 * and ports, AUTH_JWKS_URL at auth, the subscriptions file at the mounted copy of
 * config/subscriptions.yaml (identical to it), and the RequestAuthentications' issuer,
 * audiences and jwksUri at what the services issue and verify.
 */
function checkConfiguration(objects: K8sObject[], facts: RepoFacts): Finding[] {
  const findings: Finding[] = [];
  const services = kind(objects, "Service");
  const urlProblem = (value: string): string | undefined => {
    let url: URL;
    try {
      url = new URL(value);
    } catch {
      return `${value} is not a URL`;
    }
    const name = serviceOfHost(url.hostname);
    const service = services.find((s) => s.metadata.name === name);
    if (!service) return `${value}: ${url.hostname} is not a Service in namespace shop`;
    const port = Number(url.port || (url.protocol === "https:" ? 443 : 80));
    if (!(service.spec?.ports ?? []).some((p: Tree) => p.port === port))
      return `${value}: Service ${name} has no port ${port}`;
    return undefined;
  };
  const issuers = new Set<string>();
  const audiences = new Set<string>();
  for (const deployment of kind(objects, "Deployment")) {
    const where = describe(deployment);
    const app: string =
      deployment.spec?.template?.metadata?.labels?.app ?? deployment.metadata.name;
    const env = environmentOf(objects, deployment);
    issuers.add(env.get("AUTH_ISSUER") ?? "https://auth.thinmesh.local");
    audiences.add(env.get("AUTH_AUDIENCE") ?? "thinmesh");
    const peers = new Set(facts.peerCalls.filter((c) => c.caller === app).map((c) => c.callee));
    for (const [type, consumers] of facts.subscriptions) {
      if (facts.producers.get(type) === app) for (const c of consumers) peers.add(c);
    }
    for (const peer of peers) {
      const variable = `${peer.toUpperCase().replace(/-/g, "_")}_URL`;
      const value = env.get(variable);
      if (!value)
        findings.push({
          check: "configuration",
          object: where,
          message: `${variable} is not set, but ${app} calls ${peer}`,
        });
      else {
        const problem = urlProblem(value);
        if (problem)
          findings.push({
            check: "configuration",
            object: where,
            message: `${variable}: ${problem}`,
          });
      }
    }
    const jwks = env.get("AUTH_JWKS_URL");
    if (jwks) {
      const problem = urlProblem(jwks);
      if (problem)
        findings.push({
          check: "configuration",
          object: where,
          message: `AUTH_JWKS_URL: ${problem}`,
        });
    }
    const file = env.get("EVENT_SUBSCRIPTIONS_FILE");
    if (!file) {
      findings.push({
        check: "configuration",
        object: where,
        message:
          "EVENT_SUBSCRIPTIONS_FILE is not set (the default path does not exist in the image's layout)",
      });
      continue;
    }
    const spec: Tree = deployment.spec?.template?.spec ?? {};
    const mount = (spec.containers?.[0]?.volumeMounts ?? []).find((m: Tree) =>
      file.startsWith(`${m.mountPath.replace(/\/$/, "")}/`),
    );
    const volume = mount && (spec.volumes ?? []).find((v: Tree) => v.name === mount.name);
    const key = mount && file.slice(mount.mountPath.replace(/\/$/, "").length + 1);
    const map =
      volume?.configMap &&
      kind(objects, "ConfigMap").find((c) => c.metadata.name === volume.configMap.name);
    if (!map || typeof map.data?.[key] !== "string") {
      findings.push({
        check: "configuration",
        object: where,
        message: `EVENT_SUBSCRIPTIONS_FILE ${file} is not a key of a mounted ConfigMap`,
      });
    } else if (map.data[key] !== facts.subscriptionsText) {
      findings.push({
        check: "configuration",
        object: describe(map),
        message: `${key} differs from config/subscriptions.yaml: copy config/subscriptions.yaml to kustomize/base/subscriptions.yaml`,
      });
    }
  }
  for (const ra of kind(objects, "RequestAuthentication")) {
    for (const rule of ra.spec?.jwtRules ?? []) {
      if (!issuers.has(rule.issuer))
        findings.push({
          check: "configuration",
          object: describe(ra),
          message: `issuer ${rule.issuer} is not the AUTH_ISSUER the services use (${[...issuers].join(", ")})`,
        });
      for (const audience of rule.audiences ?? []) {
        if (!audiences.has(audience))
          findings.push({
            check: "configuration",
            object: describe(ra),
            message: `audience ${audience} is not the AUTH_AUDIENCE the services use (${[...audiences].join(", ")})`,
          });
      }
      if (!rule.audiences?.length)
        findings.push({
          check: "configuration",
          object: describe(ra),
          message: "no audiences: tokens for any audience would be accepted",
        });
      if (rule.forwardOriginalToken !== true)
        findings.push({
          check: "configuration",
          object: describe(ra),
          message:
            "forwardOriginalToken is not true: the services, which verify the token themselves, would get no Authorization header",
        });
      if (rule.jwksUri) {
        const problem = urlProblem(rule.jwksUri);
        if (problem)
          findings.push({
            check: "configuration",
            object: describe(ra),
            message: `jwksUri: ${problem}`,
          });
      }
    }
  }
  return findings;
}

/** Istio's root namespace (meshConfig.rootNamespace, which mesh/istio/install leaves as is). */
const rootNamespace = "istio-system";
/** Where the ingress gateway runs: the namespace of its identity. */
const gatewayNamespace =
  /^cluster\.local\/ns\/([^/]+)\//.exec(ingressPrincipal)?.[1] ?? rootNamespace;
/** The ingress gateway's pod labels (Istio's istio-ingressgateway). */
const ingressGatewayLabels: Record<string, string> = {
  app: "istio-ingressgateway",
  istio: "ingressgateway",
};

/**
 * An EnvoyFilter that patches the ingress gateway (a configPatch matching context GATEWAY, or
 * a workloadSelector that selects the gateway's pods) is in the root namespace or the
 * gateway's: Istio applies an EnvoyFilter only to proxies of its own namespace, or to every
 * proxy when it is in the root namespace, so anywhere else it silently never applies.
 */
function checkEnvoyFilters(objects: K8sObject[], facts: RepoFacts): Finding[] {
  const findings: Finding[] = [];
  const allowed = [...new Set([rootNamespace, gatewayNamespace])];
  const gatewayPods = [
    ingressGatewayLabels,
    ...kind(objects, "Gateway").map((g) => (g.spec?.selector ?? {}) as Record<string, string>),
  ];
  for (const filter of kind(objects, "EnvoyFilter")) {
    const namespace = filter.metadata.namespace;
    if (namespace && allowed.includes(namespace)) continue;
    const reasons: string[] = [];
    const patches: Tree[] = filter.spec?.configPatches ?? [];
    const gateway = patches.findIndex((p) => p?.match?.context === "GATEWAY");
    if (gateway >= 0) reasons.push(`configPatches[${gateway}].match.context is GATEWAY`);
    const selector: Record<string, string> | undefined = filter.spec?.workloadSelector?.labels;
    if (selector && Object.keys(selector).length && gatewayPods.some((l) => selects(selector, l)))
      reasons.push(
        `workloadSelector.labels (${Object.entries(selector)
          .map(([k, v]) => `${k}=${v}`)
          .join(", ")}) select the ingress gateway`,
      );
    if (!reasons.length) continue;
    const source = facts.manifests.get(`EnvoyFilter/${filter.metadata.name}`);
    const fix = !source
      ? `set metadata.namespace: ${rootNamespace}`
      : source.namespace && allowed.includes(source.namespace)
        ? `${source.file} declares metadata.namespace ${source.namespace}, but a kustomization's namespace field overwrote it: list kustomize/transformers/namespace under transformers instead (it keeps a namespace a resource declares)`
        : `set metadata.namespace: ${rootNamespace} in ${source.file}`;
    findings.push({
      check: "envoy-filters",
      object: describe(filter),
      message: `metadata.namespace is ${namespace ?? "unset"}, but ${reasons.join(" and ")}: the ingress gateway runs in ${gatewayNamespace}, and Istio applies an EnvoyFilter only to proxies of its own namespace (to every proxy from the root namespace ${rootNamespace}), so this one never applies. It must be in ${allowed.join(" or ")}: ${fix}`,
    });
  }
  return findings;
}
