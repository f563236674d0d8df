import { defineConfig } from "drizzle-kit";

export default defineConfig({
  dialect: "postgresql",
  // The outbox and inbox live in the order database too: the saga's events commit in the
  // same transactions as the order rows they describe.
  schema: ["./src/db/schema.ts", "../../packages/platform/src/events/schema.ts"],
  out: "./drizzle",
});
