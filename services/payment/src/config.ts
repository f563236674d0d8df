import { baseConfigSchema, tokenConfigSchema } from "@thinmesh/platform";
import { z } from "zod";

// ORDER_URL (where PaymentCaptured and PaymentDeclined go) is read by the platform's outbox
// relay, which derives it from config/subscriptions.yaml.
export const paymentConfigSchema = baseConfigSchema.extend(tokenConfigSchema.shape).extend({
  /** The simulator declines charges above this many minor units (50000: EUR 500.00). */
  PAYMENT_DECLINE_ABOVE_MINOR: z.coerce.number().int().min(0).default(50_000),
  /** Every order's first N charge attempts fail transiently (demos of the saga's retries). */
  PAYMENT_SIMULATOR_TRANSIENT_FAILURES: z.coerce.number().int().min(0).max(100).default(0),
  /** How often to look for charges that are due (retries, charges a crashed process left). */
  PAYMENT_CHARGE_POLL_MS: z.coerce.number().int().min(10).default(1_000),
});

export type PaymentConfig = z.infer<typeof paymentConfigSchema>;
