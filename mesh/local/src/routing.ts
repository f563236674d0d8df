import type { HttpRoute } from "./istio.js";
import { matchesRoute, pickDestination, type RequestFacts, workloadOf } from "./mesh/match.js";

export { type RequestFacts, workloadOf };

export interface RouteChoice {
  route: HttpRoute;
  /** The destination host as written (a short name or a cluster FQDN). */
  host: string;
}

/** Istio's semantics: routes in order, first match wins; match blocks OR, fields within AND. */
export function chooseRoute(
  routes: HttpRoute[],
  request: RequestFacts,
  random = Math.random,
): RouteChoice | undefined {
  const route = routes.find((candidate) => matchesRoute(candidate, request));
  if (!route) return undefined;
  return { route, host: pickDestination(route, random).destination.host };
}
