// The provider calls the fault tests and operators count: one metric sample and one log line
// (with the order id) per call, whatever the provider answers.
import { Writable } from "node:stream";
import { createLogger } from "@thinmesh/platform";
import { Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { type ChargeRequest, TransientProviderError } from "../src/domain/provider.js";
import { countingProviderCalls } from "../src/provider-calls.js";

const request = (orderId: string, paymentToken = "tok_test_visa"): ChargeRequest => ({
  orderId,
  amount: { currencyCode: "EUR", amountMinor: 100n },
  paymentToken,
  idempotencyKey: orderId,
});

describe("countingProviderCalls", () => {
  it("counts and logs every call by outcome, failures included", async () => {
    const registry = new Registry();
    const lines: Record<string, unknown>[] = [];
    const destination = new Writable({
      write(chunk, _encoding, done) {
        lines.push(JSON.parse(chunk.toString()));
        done();
      },
    });
    const logger = createLogger({
      service: "payment",
      version: "test",
      level: "info",
      destination,
    });
    const provider = countingProviderCalls(
      {
        async charge(r) {
          if (r.paymentToken === "flaky") throw new TransientProviderError("outage");
          if (r.paymentToken === "broken") throw new Error("bug");
          return r.paymentToken === "declined"
            ? { outcome: "declined", reason: "no" }
            : { outcome: "captured", reference: "ref" };
        },
      },
      registry,
      logger,
    );
    await provider.charge(request("o1"));
    await provider.charge(request("o1"));
    await provider.charge(request("o2", "declined"));
    await expect(provider.charge(request("o3", "flaky"))).rejects.toThrow("outage");
    await expect(provider.charge(request("o4", "broken"))).rejects.toThrow("bug");

    const metric = await registry.getSingleMetric("payment_provider_calls_total")!.get();
    expect(Object.fromEntries(metric.values.map((v) => [v.labels.outcome, v.value]))).toEqual({
      captured: 2,
      declined: 1,
      transient_error: 1,
      error: 1,
    });
    const calls = lines.filter((l) => l.msg === "calling the payment provider");
    expect(calls.map((l) => l.orderId)).toEqual(["o1", "o1", "o2", "o3", "o4"]);
  });
});
