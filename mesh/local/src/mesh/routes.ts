/**
 * Outbound routing of a sidecar: the mesh VirtualService for the destination host (short name
 * or FQDN), its routes in order with Istio's match semantics (match.ts), a weighted pick among
 * the route's destinations, its timeout, retries (retry.ts) and fault. No VirtualService for the
 * host gives Istio's default route: the host itself, no timeout, Istio's default retry policy.
 * A VirtualService whose routes all miss gives undefined: Envoy answers 404 with flag NR.
 * Not implemented: mirror, rewrite, redirect, headers, delegate (refused at load).
 */
import { durationMs, type MeshConfig } from "./config.js";
import type { FaultPolicy } from "./faults.js";
import { matchesRoute, pickDestination, type RequestFacts, workloadOf } from "./match.js";
import { type RetryPolicy, retryPolicy } from "./retry.js";

export interface MeshRoute {
  /** The HTTPRoute's name (Envoy's route_name). */
  name?: string;
  virtualService?: string;
  destination: { host: string; subset?: string; port?: number };
  timeoutMs?: number;
  retry: RetryPolicy;
  fault?: FaultPolicy;
  mirror?: never;
}

export function routeFor(
  config: MeshConfig,
  host: string,
  request: RequestFacts,
  random: () => number = Math.random,
): MeshRoute | undefined {
  const short = workloadOf(host, config.namespace);
  if (!short) return undefined;
  const virtualService = config.virtualServices.find((vs) =>
    vs.spec.hosts.some((h) => workloadOf(h, config.namespace) === short),
  );
  if (!virtualService) return { destination: { host: short }, retry: retryPolicy(undefined) };
  const route = virtualService.spec.http.find((candidate) => matchesRoute(candidate, request));
  if (!route) return undefined;
  const { destination } = pickDestination(route, random);
  return {
    ...(route.name !== undefined && { name: route.name }),
    virtualService: virtualService.metadata.name,
    destination: {
      host: workloadOf(destination.host, config.namespace) ?? destination.host,
      ...(destination.subset && { subset: destination.subset }),
      ...(destination.port && { port: destination.port.number }),
    },
    ...(route.timeout && { timeoutMs: durationMs(route.timeout) }),
    retry: retryPolicy(route.retries),
    ...(route.fault && { fault: route.fault }),
  };
}
