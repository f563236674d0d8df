/**
 * Envoy's load balancers with equal endpoint weights, over the endpoints the caller passes
 * (already filtered to the subset and to those outlier detection has not ejected).
 * ROUND_ROBIN cycles per picker; RANDOM is uniform; LEAST_REQUEST is Envoy's power of two
 * choices (choice_count 2: two random picks, the one with fewer active requests wins, a tie
 * keeps the first), with a full scan when there are no more endpoints than choices.
 */
import type { LoadBalancerKind } from "./destinations.js";

export interface Endpoint {
  id: string;
  activeRequests: number;
}

const CHOICE_COUNT = 2;

export class EndpointPicker {
  #next = 0;
  constructor(readonly kind: LoadBalancerKind) {}

  pick<E extends Endpoint>(endpoints: E[], random: () => number = Math.random): E | undefined {
    if (endpoints.length === 0) return undefined;
    const at = (r: number) => endpoints[Math.floor(r * endpoints.length) % endpoints.length]!;
    switch (this.kind) {
      case "ROUND_ROBIN":
        return endpoints[this.#next++ % endpoints.length];
      case "RANDOM":
        return at(random());
      case "LEAST_REQUEST": {
        if (endpoints.length <= CHOICE_COUNT) {
          // Full scan from a random start, so that ties spread.
          const start = Math.floor(random() * endpoints.length);
          let best = endpoints[start]!;
          for (let i = 1; i < endpoints.length; i++) {
            const candidate = endpoints[(start + i) % endpoints.length]!;
            if (candidate.activeRequests < best.activeRequests) best = candidate;
          }
          return best;
        }
        let best = at(random());
        for (let i = 1; i < CHOICE_COUNT; i++) {
          const sampled = at(random());
          if (sampled.activeRequests < best.activeRequests) best = sampled;
        }
        return best;
      }
    }
  }
}

/** One pick with a fresh picker (ROUND_ROBIN needs a kept EndpointPicker to rotate). */
export function pickEndpoint<E extends Endpoint>(
  kind: LoadBalancerKind,
  endpoints: E[],
  random: () => number = Math.random,
  picker: EndpointPicker = new EndpointPicker(kind),
): E | undefined {
  return picker.pick(endpoints, random);
}
