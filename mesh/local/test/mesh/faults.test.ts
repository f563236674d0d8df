import { describe, expect, it } from "vitest";
import { chooseFault } from "../../src/mesh/faults.js";
import { routeFor } from "../../src/mesh/routes.js";
import { headers, seeded, variantConfig } from "./support.js";

const fixed = (value: number) => () => value;

describe("chooseFault", () => {
  it("injects nothing without a fault or without a percentage", () => {
    expect(chooseFault(undefined, fixed(0))).toEqual({});
    expect(chooseFault({ abort: { httpStatus: 503 } }, fixed(0))).toEqual({});
    expect(chooseFault({ delay: { fixedDelay: "1s" } }, fixed(0))).toEqual({});
  });

  it("aborts with httpStatus for its percentage of requests", () => {
    const fault = { abort: { httpStatus: 503, percentage: { value: 30 } } };
    expect(chooseFault(fault, fixed(0.29))).toEqual({ abort: { status: 503 } });
    expect(chooseFault(fault, fixed(0.3))).toEqual({});
    const random = seeded(7);
    let aborted = 0;
    for (let i = 0; i < 10_000; i++) if (chooseFault(fault, random).abort) aborted++;
    expect(aborted / 10_000).toBeGreaterThan(0.28);
    expect(aborted / 10_000).toBeLessThan(0.32);
  });

  it("delays by fixedDelay", () => {
    const fault = { delay: { fixedDelay: "4s", percentage: { value: 50 } } };
    expect(chooseFault(fault, fixed(0.1))).toEqual({ delayMs: 4000 });
    expect(chooseFault(fault, fixed(0.6))).toEqual({});
  });

  it("reads the repository's fault variants", () => {
    const request = {
      path: "/shop.events.v1.EventSinkService/Deliver",
      method: "POST",
      header: headers(),
    };
    const abort = routeFor(variantConfig("payment-fault-abort.yaml"), "payment", request)!;
    expect(chooseFault(abort.fault, fixed(0))).toEqual({ abort: { status: 503 } });
    const delay = routeFor(variantConfig("payment-fault-delay.yaml"), "payment", request)!;
    expect(chooseFault(delay.fault, fixed(0))).toEqual({ delayMs: 4000 });
  });
});
