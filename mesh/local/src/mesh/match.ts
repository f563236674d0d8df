/**
 * Istio's HTTPMatchRequest semantics, shared by the ingress (routing.ts) and the sidecars
 * (routes.ts): routes in order, first match wins; match blocks are ORed, their fields ANDed;
 * exact / prefix / regex (RE2 full match, so the pattern is anchored) against the path without
 * its query, the method and headers. JavaScript's regex dialect stands in for RE2's: the same
 * for the patterns Istio users write, but RE2 has no backreferences or lookaround.
 */
import type { HttpRoute, StringMatch } from "./config.js";

export interface RequestFacts {
  path: string;
  method: string;
  header(name: string): string | undefined;
}

const compiled = new Map<string, RegExp>();
const anchored = (pattern: string) => {
  let regex = compiled.get(pattern);
  if (!regex) {
    regex = new RegExp(`^(?:${pattern})$`);
    compiled.set(pattern, regex);
  }
  return regex;
};

export function matchesString(match: StringMatch, value: string | undefined): boolean {
  if (value === undefined) return false;
  if ("exact" in match) return value === match.exact;
  if ("prefix" in match) return value.startsWith(match.prefix);
  return anchored(match.regex).test(value);
}

export function matchesRoute(route: HttpRoute, request: RequestFacts): boolean {
  const path = request.path.split("?")[0] ?? "";
  return (
    !route.match?.length ||
    route.match.some(
      (m) =>
        (!m.uri || matchesString(m.uri, path)) &&
        (!m.method || matchesString(m.method, request.method)) &&
        Object.entries(m.headers ?? {}).every(([name, match]) =>
          matchesString(match, request.header(name)),
        ),
    )
  );
}

/**
 * A weighted pick among a route's destinations, in proportion to their weights (relative, as
 * Envoy's WeightedCluster; a total above 0 is checked at load).
 */
export function pickDestination(
  route: HttpRoute,
  random: () => number = Math.random,
): HttpRoute["route"][number] {
  const destinations = route.route;
  if (destinations.length === 1) return destinations[0]!;
  let roll = random() * destinations.reduce((sum, d) => sum + (d.weight ?? 0), 0);
  for (const candidate of destinations) {
    roll -= candidate.weight ?? 0;
    if (roll < 0) return candidate;
  }
  return destinations.at(-1)!;
}

/** "auth", "auth.shop", "auth.shop.svc.cluster.local" → "auth" (namespace shop only). */
export function workloadOf(host: string, namespace = "shop"): string | undefined {
  const [name, ns = namespace, ...rest] = host.split(".");
  if (ns !== namespace) return undefined;
  if (rest.length && rest.join(".") !== "svc.cluster.local" && rest.join(".") !== "svc")
    return undefined;
  return name;
}
