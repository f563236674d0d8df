import { defineConfig } from "drizzle-kit";

// The outbox and inbox live in the payment database too: they commit with its payments.
export default defineConfig({
  dialect: "postgresql",
  schema: ["./src/db/schema.ts", "../../packages/platform/src/events/schema.ts"],
  out: "./drizzle",
});
