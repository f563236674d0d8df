import { readFileSync } from "node:fs";
import { parse } from "yaml";
import { z } from "zod";

/** Event type (a protobuf message's full name) → the services that consume it. */
export type Subscriptions = ReadonlyMap<string, readonly string[]>;

/** Event type → the service that produces it (its ServiceAccount names its mTLS identity). */
export type Producers = ReadonlyMap<string, string>;

const eventType = z
  .string()
  .regex(/^[a-z][\w]*(\.[\w]+)+$/, "keys must be full protobuf message names");
const serviceName = z.string().regex(/^[a-z][a-z0-9-]*$/, "must be service names");
const fileSchema = z.object({
  subscriptions: z.record(eventType, z.array(serviceName).min(1)),
  producers: z.record(eventType, serviceName).default({}),
});

/** Reads the subscriptions file (config/subscriptions.yaml): configuration, not code. */
export function loadSubscriptions(path: string): Subscriptions {
  return new Map(Object.entries(readSubscriptionsFile(path).subscriptions));
}

/** The same file's `producers`: who may send each event type. */
export function loadProducers(path: string): Producers {
  return new Map(Object.entries(readSubscriptionsFile(path).producers));
}

function readSubscriptionsFile(path: string) {
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
  return result.data;
}
