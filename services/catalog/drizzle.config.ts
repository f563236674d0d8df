import { defineConfig } from "drizzle-kit";

export default defineConfig({
  dialect: "postgresql",
  // The platform's outbox and inbox tables live in the catalog's database too.
  schema: ["./src/db/schema.ts", "../../packages/platform/src/events/schema.ts"],
  out: "./drizzle",
});
