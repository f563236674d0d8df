/**
 * AuthorizationPolicy as Istio's RBAC filters evaluate it on the inbound sidecar: CUSTOM is
 * refused at load (no ext_authz here); DENY policies first (any match denies); then, if no ALLOW
 * policy applies to the workload, allow; else allow only when an ALLOW policy matches. A policy
 * applies by namespace and `selector.matchLabels`; `spec: {}` is an ALLOW policy with no rules,
 * which matches nothing (allow-nothing). A rule matches when any `from` and any `to` entry and
 * every `when` condition match; within an entry fields AND, within a field values OR, `not*`
 * fields match when none of their values do. Values: exact, `prefix*`, `*suffix`, `*` (present).
 * Namespaces come from the mTLS principal (cluster.local/ns/<ns>/sa/<sa>), as Istio's generated
 * principal regex reads them. Denial is 403 "RBAC: access denied" (gRPC callers see
 * PERMISSION_DENIED). Not implemented (refused at load): ipBlocks, remoteIpBlocks, AUDIT,
 * root-namespace policies, path templates are not expanded ({*} is a literal).
 */
import type { AuthorizationPolicy, AuthorizationRule, MeshConfig } from "./config.js";

export interface AuthzRequest {
  /** The caller's mTLS identity: "cluster.local/ns/shop/sa/order". */
  principal?: string;
  /** The JWT's "iss/sub". */
  requestPrincipal?: string;
  claims?: Record<string, unknown>;
  method: string;
  /** Normalised, without the query. */
  path: string;
  host?: string;
  port?: number;
  header(name: string): string | undefined;
}

export interface Workload {
  namespace: string;
  labels: Record<string, string>;
}

export type AuthzDecision =
  | { allowed: true; policy?: string }
  | { allowed: false; policy?: string; status: 403; body: "RBAC: access denied" };

const deny = (policy?: string): AuthzDecision => ({
  allowed: false,
  ...(policy && { policy }),
  status: 403,
  body: "RBAC: access denied",
});

/** Istio's string match for policy values: exact, "prefix*", "*suffix", "*" (any non-empty). */
export function matchesValue(pattern: string, value: string | undefined): boolean {
  if (value === undefined || value === "") return false;
  if (pattern === "*") return true;
  if (pattern.endsWith("*")) return value.startsWith(pattern.slice(0, -1));
  if (pattern.startsWith("*")) return value.endsWith(pattern.slice(1));
  return value === pattern;
}

const anyOf = (patterns: string[], values: (string | undefined)[]) =>
  patterns.some((p) => values.some((v) => matchesValue(p, v)));

/** A field's check: undefined patterns match; `not` fields match when no pattern does. */
const field = (patterns: string[] | undefined, values: (string | undefined)[], negated = false) =>
  patterns === undefined || anyOf(patterns, values) !== negated;

const namespaceOf = (principal: string | undefined) =>
  principal ? /(?:^|\/)ns\/([^/]+)\//.exec(principal)?.[1] : undefined;

/** The string values of a claim path (request.auth.claims[a][b]): a list's strings, or the string. */
function claimValues(claims: Record<string, unknown> | undefined, path: string[]): string[] {
  let value: unknown = claims;
  for (const key of path) {
    if (typeof value !== "object" || value === null || Array.isArray(value)) return [];
    value = (value as Record<string, unknown>)[key];
  }
  if (typeof value === "string") return [value];
  if (Array.isArray(value)) return value.filter((v): v is string => typeof v === "string");
  return [];
}

function conditionValues(key: string, request: AuthzRequest): (string | undefined)[] {
  const header = /^request\.headers\[(.+)\]$/.exec(key);
  if (header) return [request.header(header[1]!.toLowerCase())];
  if (key.startsWith("request.auth.claims[")) {
    const path = [...key.slice("request.auth.claims".length).matchAll(/\[([^\]]+)\]/g)].map(
      (m) => m[1]!,
    );
    return claimValues(request.claims, path);
  }
  switch (key) {
    case "source.principal":
      return [request.principal];
    case "source.namespace":
      return [namespaceOf(request.principal)];
    case "request.auth.principal":
      return [request.requestPrincipal];
    case "request.auth.audiences":
      return claimValues(request.claims, ["aud"]);
    case "request.auth.presenter":
      return claimValues(request.claims, ["azp"]);
    case "destination.port":
      return [request.port === undefined ? undefined : String(request.port)];
  }
  // Keys are checked at load (config.ts); an unknown one here matches nothing.
  return [];
}

const hostValues = (host: string | undefined) => {
  if (!host) return [undefined];
  const lower = host.toLowerCase();
  return [lower, lower.replace(/:\d+$/, "")];
};
const lowered = (patterns: string[] | undefined) => patterns?.map((p) => p.toLowerCase());

function matchesRule(rule: AuthorizationRule, request: AuthzRequest): boolean {
  const fromOk =
    !rule.from ||
    rule.from.some(({ source: s }) => {
      const ns = [namespaceOf(request.principal)];
      return (
        field(s.principals, [request.principal]) &&
        field(s.notPrincipals, [request.principal], true) &&
        field(s.requestPrincipals, [request.requestPrincipal]) &&
        field(s.notRequestPrincipals, [request.requestPrincipal], true) &&
        field(s.namespaces, ns) &&
        field(s.notNamespaces, ns, true)
      );
    });
  if (!fromOk) return false;
  const toOk =
    !rule.to ||
    rule.to.some(({ operation: o }) => {
      const port = [request.port === undefined ? undefined : String(request.port)];
      return (
        field(lowered(o.hosts), hostValues(request.host)) &&
        field(lowered(o.notHosts), hostValues(request.host), true) &&
        field(o.ports, port) &&
        field(o.notPorts, port, true) &&
        field(o.methods, [request.method]) &&
        field(o.notMethods, [request.method], true) &&
        field(o.paths, [request.path]) &&
        field(o.notPaths, [request.path], true)
      );
    });
  if (!toOk) return false;
  return (rule.when ?? []).every((condition) => {
    const values = conditionValues(condition.key, request);
    return field(condition.values, values) && field(condition.notValues, values, true);
  });
}

const matchesPolicy = (policy: AuthorizationPolicy, request: AuthzRequest) =>
  (policy.spec.rules ?? []).some((rule) => matchesRule(rule, request));

/** The policies that apply to a workload: its namespace's, whose selector its labels satisfy. */
export function policiesFor(config: MeshConfig, workload: Workload): AuthorizationPolicy[] {
  return config.authorizationPolicies.filter(
    (policy) =>
      (policy.metadata.namespace ?? config.namespace) === workload.namespace &&
      Object.entries(policy.spec.selector?.matchLabels ?? {}).every(
        ([key, value]) => workload.labels[key] === value,
      ),
  );
}

export function authorize(
  config: MeshConfig,
  workload: Workload,
  request: AuthzRequest,
): AuthzDecision {
  const policies = policiesFor(config, workload);
  const name = (p: AuthorizationPolicy) =>
    `${p.metadata.namespace ?? config.namespace}.${p.metadata.name}`;
  const denying = policies.find((p) => p.spec.action === "DENY" && matchesPolicy(p, request));
  if (denying) return deny(name(denying));
  const allowPolicies = policies.filter((p) => (p.spec.action ?? "ALLOW") === "ALLOW");
  if (allowPolicies.length === 0) return { allowed: true };
  const allowing = allowPolicies.find((p) => matchesPolicy(p, request));
  return allowing ? { allowed: true, policy: name(allowing) } : deny();
}
