import { baseConfigSchema, tokenConfigSchema } from "@thinmesh/platform";
import { z } from "zod";

export const orderConfigSchema = baseConfigSchema.extend(tokenConfigSchema.shape).extend({
  /**
   * Base URL of the catalog (through the mesh): PlaceOrder prices items with GetProducts, and
   * the outbox relay delivers OrderPlaced, OrderConfirmed and OrderCancelled there. The relay
   * reads PAYMENT_URL for PaymentRequested the same way (see config/subscriptions.yaml).
   */
  CATALOG_URL: z.url({ protocol: /^https?$/ }),
});

export type OrderConfig = z.infer<typeof orderConfigSchema>;
