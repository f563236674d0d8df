import { readFileSync } from "node:fs";
import { parse } from "yaml";
import { z } from "zod";

/** Event type (a protobuf message's full name) → the services that consume it. */
export type Subscriptions = ReadonlyMap<string, readonly string[]>;

const fileSchema = z.object({
  subscriptions: z.record(
    z.string().regex(/^[a-z][\w]*(\.[\w]+)+$/, "keys must be full protobuf message names"),
    z.array(z.string().regex(/^[a-z][a-z0-9-]*$/, "subscribers are service names")).min(1),
  ),
});

/** Reads the subscriptions file (config/subscriptions.yaml): configuration, not code. */
export function loadSubscriptions(path: string): Subscriptions {
  let parsed: unknown;
  try {
    parsed = parse(readFileSync(path, "utf8"));
  } catch (error) {
    throw new Error(
      `cannot read the event subscriptions file ${path}: ${(error as Error).message}`,
    );
  }
  const result = fileSchema.safeParse(parsed);
  if (!result.success) {
    const problems = result.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`);
    throw new Error(`event subscriptions file ${path} is invalid: ${problems.join("; ")}`);
  }
  return new Map(Object.entries(result.data.subscriptions));
}
