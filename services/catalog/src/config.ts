import { fileURLToPath } from "node:url";
import { baseConfigSchema, booleanFlag, tokenConfigSchema } from "@thinmesh/platform";
import { z } from "zod";

/** The seed set shipped with the service (from src/ or dist/ alike). */
export const bundledSeedFile = fileURLToPath(new URL("../seed/products.json", import.meta.url));

export const catalogConfigSchema = baseConfigSchema.extend(tokenConfigSchema.shape).extend({
  /** Fill an empty catalog from SEED_FILE at startup (development and demos). */
  SEED_PRODUCTS: booleanFlag.default(false),
  SEED_FILE: z.string().min(1).default(bundledSeedFile),
});

export type CatalogConfig = z.infer<typeof catalogConfigSchema>;
