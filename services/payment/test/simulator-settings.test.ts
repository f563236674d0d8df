// The simulator's settings reach the running service: PAYMENT_SIMULATOR_TRANSIENT_FAILURES
// and PAYMENT_DECLINE_ABOVE_MINOR.
import { loadConfig } from "@thinmesh/platform";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { paymentConfigSchema } from "../src/config.js";
import {
  paymentRequested,
  paymentRequestedEvent,
  settledFor,
  startTestPayment,
  type TestPayment,
} from "./support.js";

let payment: TestPayment;

beforeAll(async () => {
  payment = await startTestPayment("payment_settings", {
    PAYMENT_SIMULATOR_TRANSIENT_FAILURES: "2",
    PAYMENT_DECLINE_ABOVE_MINOR: "1000",
  });
});
afterAll(async () => {
  await payment?.stop();
});

describe("the simulator settings", () => {
  it("fail every order's first N charges transiently before it is charged", async () => {
    for (const amountMinor of [1_000n, 1_001n]) {
      const requested = paymentRequested({ amount: { currencyCode: "EUR", amountMinor } });
      const event = paymentRequestedEvent(requested);
      // Accepted at once: the charge is retried by payment itself.
      expect(await payment.sink.deliverOne(event)).toEqual({ duplicate: false });
      const [recorded] = (await settledFor(payment.service, requested.orderId)).payments;
      expect(recorded?.chargeAttempts).toBe(3);
      // The limit is 10.00 EUR here instead of 500.00.
      expect(recorded).toMatchObject(
        amountMinor === 1_000n
          ? { status: "CAPTURED" }
          : { status: "DECLINED", declineReason: "amount exceeds the limit of EUR 10.00" },
      );
    }
  });

  it("default to a limit of 500.00 and no transient failures", () => {
    const config = loadConfig(paymentConfigSchema, { AUTH_JWKS_URL: "http://auth/jwks.json" });
    expect(config.PAYMENT_DECLINE_ABOVE_MINOR).toBe(50_000);
    expect(config.PAYMENT_SIMULATOR_TRANSIENT_FAILURES).toBe(0);
    expect(() =>
      loadConfig(paymentConfigSchema, {
        AUTH_JWKS_URL: "http://auth/jwks.json",
        PAYMENT_SIMULATOR_TRANSIENT_FAILURES: "-1",
      }),
    ).toThrow(/PAYMENT_SIMULATOR_TRANSIENT_FAILURES/);
  });
});
