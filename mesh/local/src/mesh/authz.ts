/**
 * AuthorizationPolicy as Istio's RBAC filters evaluate it on the inbound sidecar: CUSTOM is
 * refused at load (no ext_authz here); DENY policies first (any match denies); then, if no ALLOW
 * policy applies to the workload, allow; else allow only when an ALLOW policy matches. A policy
 * applies by namespace and `selector.matchLabels`; `spec: {}` is an ALLOW policy with no rules,
 * which matches nothing (allow-nothing). A rule matches when any `from` and any `to` entry and
 * every `when` condition match; within an entry fields AND, within a field values OR, `not*`
 * fields match when none of their values do. Values: exact, `prefix*`, `*suffix`, `*` (present);
 * a path with `{*}`/`{**}` is Envoy's uri_template (pathTemplateRegex). requestPrincipals and
 * request.auth.principal split each value at its last `/` into an issuer and a subject matched
 * against the token's `iss` and `sub` claims, as Istio's generator does. Hosts match the
 * request's authority as sent, case-insensitively. Namespaces come from the mTLS principal
 * (cluster.local/ns/<ns>/sa/<sa>), as Istio's generated principal regex reads them. Denial is
 * 403 "RBAC: access denied" (gRPC callers see PERMISSION_DENIED). Not implemented (refused at
 * load): ipBlocks, remoteIpBlocks, AUDIT, root-namespace policies, the dry-run annotation.
 */
import type { AuthorizationPolicy, AuthorizationRule, MeshConfig } from "./config.js";

export interface AuthzRequest {
  /** The caller's mTLS identity: "cluster.local/ns/shop/sa/order". */
  principal?: string;
  /** The verified JWT's payload (its `iss` and `sub` make the request principal). */
  claims?: Record<string, unknown>;
  method: string;
  /** Normalised, without the query. */
  path: string;
  /** The request's authority as sent (`:authority`, or `host` over HTTP/1). */
  host?: string;
  port?: number;
  header(name: string): string | undefined;
}

export interface Workload {
  namespace: string;
  labels: Record<string, string>;
}

/** `policy`: the Envoy RBAC policy that decided, as Istio names it (ns[…]-policy[…]-rule[…]). */
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

// Envoy's uri_template literal characters (RFC 3986 pchar without `*` and `=`).
const TEMPLATE_LITERAL = "A-Za-z0-9\\-._~%!$&'()+,;:@";
const ENVOY_LITERAL = new RegExp(`^[${TEMPLATE_LITERAL}]+$`);
// Istio's validLiteral (pkg/config/security) also admits `=`.
const ISTIO_LITERAL = /^[a-zA-Z0-9\-._~%!$&'()+,;:@=]+$/;

/** Whether a path value is a template: Istio's ContainsPathTemplate. */
export const isPathTemplate = (path: string) => path.includes("{*}") || path.includes("{**}");

/**
 * Why Istio's validation (CheckValidPathTemplate) or Envoy's uri_template parser would refuse a
 * paths/notPaths value, or undefined. Only whole segments `{*}`, `{**}` are templates; `{**}`
 * is the last one; any other `{`/`}` is refused even without a template.
 */
export function pathTemplateProblem(path: string): string | undefined {
  const template = isPathTemplate(path);
  let sawAny = false;
  for (const segment of path.replace(/^\/+|\/+$/g, "").split("/")) {
    if (segment === "{*}" || segment === "{**}") {
      if (sawAny) return `invalid or unsupported path ${path}: {**} is not the last operator`;
      sawAny = segment === "{**}";
      continue;
    }
    if (/[{}]/.test(segment)) {
      return `invalid or unsupported path ${path}: contains '{' or '}' beyond a supported path template`;
    }
    if (template && !ISTIO_LITERAL.test(segment)) {
      return `invalid or unsupported path ${path}: contains segment ${segment} with invalid string literal`;
    }
    // Istio admits these; Envoy's uri_template parser then refuses the policy (a NACK).
    if (template && !ENVOY_LITERAL.test(segment)) {
      return `path template ${path}: Envoy's uri_template refuses the literal ${segment}`;
    }
  }
  if (template && !path.startsWith("/")) {
    return `path template ${path}: Envoy's uri_template needs a leading /`;
  }
  return undefined;
}

/**
 * Envoy's uri_template regex for an Istio path template (`{*}` → `*`, `{**}` → `**`): `*` is
 * one non-empty segment, `**` any run of characters and slashes (possibly empty); matched
 * against the whole path without the query.
 */
export function pathTemplateRegex(path: string): RegExp {
  const segments = path
    .slice(1)
    .split("/")
    .map((segment) =>
      segment === "{*}"
        ? `[${TEMPLATE_LITERAL}]+`
        : segment === "{**}"
          ? `[${TEMPLATE_LITERAL}/]*`
          : segment.replace(/[$()+.]/g, "\\$&"),
    );
  return new RegExp(`^/${segments.join("/")}$`);
}

const templates = new Map<string, RegExp>();
function matchesPath(pattern: string, path: string | undefined): boolean {
  if (!isPathTemplate(pattern)) return matchesValue(pattern, path);
  if (path === undefined) return false;
  let regex = templates.get(pattern);
  if (!regex) {
    regex = pathTemplateRegex(pattern);
    templates.set(pattern, regex);
  }
  return regex.test(path);
}

type Matcher = (pattern: string, value: string | undefined) => boolean;

/** Istio's HeaderMatcher/HostMatcher: `*` is Envoy's present_match, so a header sent empty matches. */
const headerMatches: Matcher = (pattern, value) =>
  pattern === "*" ? value !== undefined : matchesValue(pattern, value);

const anyOf = (patterns: string[], values: (string | undefined)[], match: Matcher) =>
  patterns.some((p) => values.some((v) => match(p, v)));

/** A field's check: undefined patterns match; `not` fields match when no pattern does. */
const field = (
  patterns: string[] | undefined,
  values: (string | undefined)[],
  negated = false,
  match: Matcher = matchesValue,
) => patterns === undefined || anyOf(patterns, values, match) !== negated;

/** Envoy's StringMatcher kinds as Istio's generator emits them for iss and sub. */
type ClaimMatch = { any: true } | { exact: string } | { prefix: string } | { suffix: string };
const claimMatches = (m: ClaimMatch, value: unknown) =>
  typeof value === "string" &&
  ("any" in m
    ? value !== ""
    : "exact" in m
      ? value === m.exact
      : "prefix" in m
        ? value.startsWith(m.prefix)
        : value.endsWith(m.suffix));

/**
 * Istio's requestPrincipalGenerator: the value splits at its last `/` (an issuer may be a URL)
 * into matchers on the token's `iss` and `sub`; `*` (whole or a half) is regex `.+`, so a token
 * without a `sub` matches no `*`.
 */
export function matchesRequestPrincipal(
  pattern: string,
  claims: Record<string, unknown> | undefined,
): boolean {
  if (!claims) return false;
  const slash = pattern.lastIndexOf("/");
  const found = slash >= 0;
  const iss = found ? pattern.slice(0, slash) : pattern;
  const sub = found ? pattern.slice(slash + 1) : "";
  let matchIss: ClaimMatch;
  let matchSub: ClaimMatch;
  if (pattern === "*") {
    matchIss = { any: true };
    matchSub = { any: true };
  } else if (pattern.startsWith("*")) {
    if (found) {
      matchIss = iss === "*" ? { any: true } : { suffix: iss.slice(1) };
      matchSub = { exact: sub };
    } else {
      matchIss = { any: true };
      matchSub = { suffix: pattern.slice(1) };
    }
  } else if (pattern.endsWith("*")) {
    if (found) {
      matchIss = { exact: iss };
      matchSub = sub === "*" ? { any: true } : { prefix: sub.slice(0, -1) };
    } else {
      matchIss = { prefix: pattern.slice(0, -1) };
      matchSub = { any: true };
    }
  } else {
    matchIss = { exact: iss };
    matchSub = { exact: sub };
  }
  return claimMatches(matchIss, claims.iss) && claimMatches(matchSub, claims.sub);
}

/** A requestPrincipals-style field: the patterns against the token's claims. */
const principalField = (
  patterns: string[] | undefined,
  claims: Record<string, unknown> | undefined,
  negated = false,
) => patterns === undefined || patterns.some((p) => matchesRequestPrincipal(p, claims)) !== negated;

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

// Istio's HostMatcher: case-insensitive on the authority as sent; `host:8080` is not `host`.
const hostValues = (host: string | undefined) => [host?.toLowerCase()];
const lowered = (patterns: string[] | undefined) => patterns?.map((p) => p.toLowerCase());

function matchesRule(rule: AuthorizationRule, request: AuthzRequest): boolean {
  // Proto3 cannot tell `from: []` from no `from`: Istio's model matches any for both.
  const fromOk =
    !rule.from?.length ||
    rule.from.some(({ source: s = {} }) => {
      const ns = [namespaceOf(request.principal)];
      return (
        field(s.principals, [request.principal]) &&
        field(s.notPrincipals, [request.principal], true) &&
        principalField(s.requestPrincipals, request.claims) &&
        principalField(s.notRequestPrincipals, request.claims, true) &&
        field(s.namespaces, ns) &&
        field(s.notNamespaces, ns, true)
      );
    });
  if (!fromOk) return false;
  const toOk =
    !rule.to?.length ||
    rule.to.some(({ operation: o = {} }) => {
      const port = [request.port === undefined ? undefined : String(request.port)];
      return (
        field(lowered(o.hosts), hostValues(request.host), false, headerMatches) &&
        field(lowered(o.notHosts), hostValues(request.host), true, headerMatches) &&
        field(o.ports, port) &&
        field(o.notPorts, port, true) &&
        field(o.methods, [request.method]) &&
        field(o.notMethods, [request.method], true) &&
        field(o.paths, [request.path], false, matchesPath) &&
        field(o.notPaths, [request.path], true, matchesPath)
      );
    });
  if (!toOk) return false;
  return (rule.when ?? []).every((condition) => {
    if (condition.key === "request.auth.principal") {
      return (
        principalField(condition.values, request.claims) &&
        principalField(condition.notValues, request.claims, true)
      );
    }
    const values = conditionValues(condition.key, request);
    const match = condition.key.startsWith("request.headers[") ? headerMatches : matchesValue;
    return (
      field(condition.values, values, false, match) &&
      field(condition.notValues, values, true, match)
    );
  });
}

/**
 * The Envoy RBAC policy names (Istio's policyName, one per rule: `ns[shop]-policy[p]-rule[0]`)
 * of a policy's rules that match; `spec: {}` generates one that never matches.
 */
const matchingRules = (policy: AuthorizationPolicy, namespace: string, request: AuthzRequest) =>
  (policy.spec.rules ?? []).flatMap((rule, index) =>
    matchesRule(rule, request)
      ? [`ns[${namespace}]-policy[${policy.metadata.name}]-rule[${index}]`]
      : [],
  );

// Envoy's engine keeps its policies in a std::map and reports the first by name that matches.
const firstByName = (names: string[]) =>
  names.reduce<string | undefined>((min, n) => (min === undefined || n < min ? n : min), undefined);

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
  const matching = (action: "ALLOW" | "DENY") =>
    policies
      .filter((p) => (p.spec.action ?? "ALLOW") === action)
      .flatMap((p) => matchingRules(p, p.metadata.namespace ?? config.namespace, request));
  const denying = firstByName(matching("DENY"));
  if (denying) return deny(denying);
  if (!policies.some((p) => (p.spec.action ?? "ALLOW") === "ALLOW")) return { allowed: true };
  const allowing = firstByName(matching("ALLOW"));
  return allowing ? { allowed: true, policy: allowing } : deny();
}
