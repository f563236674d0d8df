import type { HttpRoute, StringMatch } from "./istio.js";

export interface RequestFacts {
  path: string;
  method: string;
  header(name: string): string | undefined;
}

export interface RouteChoice {
  route: HttpRoute;
  /** The destination host as written (a short name or a cluster FQDN). */
  host: string;
}

// Istio anchors regex matches (RE2 full match); JavaScript's are close enough for the
// patterns used here, so anchor them the same way.
const matchesString = (match: StringMatch, value: string | undefined) => {
  if (value === undefined) return false;
  if ("exact" in match) return value === match.exact;
  if ("prefix" in match) return value.startsWith(match.prefix);
  return new RegExp(`^(?:${match.regex})$`).test(value);
};

/** Istio's semantics: routes in order, first match wins; match blocks OR, fields within AND. */
export function chooseRoute(
  routes: HttpRoute[],
  request: RequestFacts,
  random = Math.random,
): RouteChoice | undefined {
  const path = request.path.split("?")[0] ?? "";
  const route = routes.find(
    (candidate) =>
      !candidate.match?.length ||
      candidate.match.some(
        (m) =>
          (!m.uri || matchesString(m.uri, path)) &&
          (!m.method || matchesString(m.method, request.method)) &&
          Object.entries(m.headers ?? {}).every(([name, match]) =>
            matchesString(match, request.header(name)),
          ),
      ),
  );
  if (!route) return undefined;
  return { route, host: pickWeighted(route, random) };
}

function pickWeighted(route: HttpRoute, random: () => number): string {
  const destinations = route.route;
  if (destinations.length === 1) return destinations[0]!.destination.host;
  let roll = random() * 100;
  for (const { destination, weight = 0 } of destinations) {
    roll -= weight;
    if (roll < 0) return destination.host;
  }
  return destinations.at(-1)!.destination.host;
}

/** "auth", "auth.shop", "auth.shop.svc.cluster.local" → "auth" (namespace shop only). */
export function workloadOf(host: string, namespace = "shop"): string | undefined {
  const [name, ns = namespace, ...rest] = host.split(".");
  if (ns !== namespace) return undefined;
  if (rest.length && rest.join(".") !== "svc.cluster.local" && rest.join(".") !== "svc")
    return undefined;
  return name;
}
