import { describe, expect, it } from "vitest";
import { EndpointPicker, pickEndpoint } from "../../src/mesh/load-balancer.js";
import { seeded } from "./support.js";

const endpoints = (...active: number[]) =>
  active.map((activeRequests, i) => ({ id: `e${i}`, activeRequests }));

describe("load balancers", () => {
  it("ROUND_ROBIN rotates per picker", () => {
    const picker = new EndpointPicker("ROUND_ROBIN");
    const list = endpoints(0, 0, 0);
    expect([1, 2, 3, 4].map(() => picker.pick(list)?.id)).toEqual(["e0", "e1", "e2", "e0"]);
  });

  it("RANDOM is uniform", () => {
    const random = seeded(5);
    const counts = new Map<string, number>();
    const list = endpoints(0, 0, 0, 0);
    for (let i = 0; i < 8000; i++) {
      const id = pickEndpoint("RANDOM", list, random)!.id;
      counts.set(id, (counts.get(id) ?? 0) + 1);
    }
    for (const count of counts.values()) expect(Math.abs(count - 2000)).toBeLessThan(200);
  });

  it("LEAST_REQUEST: two random choices, the less busy one wins", () => {
    const list = endpoints(5, 1, 9, 3);
    const sequence = [0.1, 0.3]; // e0 (5 active), then e1 (1 active)
    let i = 0;
    expect(pickEndpoint("LEAST_REQUEST", list, () => sequence[i++]!)?.id).toBe("e1");
    i = 0;
    const tie = [0.6, 0.9]; // e2 (9), e3 (3)
    expect(pickEndpoint("LEAST_REQUEST", list, () => tie[i++]!)?.id).toBe("e3");
  });

  it("LEAST_REQUEST with two endpoints always takes the less busy one", () => {
    const random = seeded(9);
    for (let i = 0; i < 100; i++)
      expect(pickEndpoint("LEAST_REQUEST", endpoints(4, 2), random)?.id).toBe("e1");
  });

  it("has nothing to pick from no endpoints", () => {
    expect(pickEndpoint("ROUND_ROBIN", [])).toBeUndefined();
  });
});
