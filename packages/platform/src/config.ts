import { fileURLToPath } from "node:url";
import { z } from "zod";

/** Thrown when the environment does not satisfy a service's configuration schema. */
export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
    this.name = "ConfigError";
  }
}

/**
 * Reads configuration from environment variables. The schema's keys are the variable names,
 * so every message names the variable to fix.
 */
export function loadConfig<S extends z.ZodObject>(
  schema: S,
  env: Record<string, string | undefined> = process.env,
): z.infer<S> {
  const result = schema.safeParse(env);
  if (result.success) return result.data;
  const problems = result.error.issues.map((issue) => {
    const variable = issue.path.join(".") || "(environment)";
    const value = env[variable];
    const got =
      value === undefined ? "it is not set" : `got ${JSON.stringify(redactValue(variable, value))}`;
    return `${variable}: ${issue.message} (${got})`;
  });
  throw new ConfigError(problems);
}

function redactValue(variable: string, value: string): string {
  if (/PASSWORD|SECRET|TOKEN|KEY/i.test(variable)) return "[redacted]";
  return value.replace(/\/\/([^:/@]+):[^@]*@/, "//$1:[redacted]@");
}

/** `VAR=` (as env files and manifests often say) means the same as leaving VAR out. */
function emptyIsUnset<T extends z.ZodType>(schema: T) {
  return z.preprocess((value) => (value === "" ? undefined : value), schema);
}

// From src/ or dist/ of packages/platform alike (and the same layout inside the images).
const defaultSubscriptionsFile = fileURLToPath(
  new URL("../../../config/subscriptions.yaml", import.meta.url),
);

const logLevels = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;

/** Variables every service reads. Services extend this with their own. */
export const baseConfigSchema = z.object({
  PORT: z.coerce.number().int().min(0).max(65535).default(8080),
  HOST: z.string().min(1).default("0.0.0.0"),
  /**
   * A socket the parent process (mesh/local) bound and passed on as this file descriptor: the
   * service listens on it instead of PORT and HOST, so the parent knows the port up front.
   */
  LISTEN_FD: emptyIsUnset(z.coerce.number().int().min(3).optional()),
  LOG_LEVEL: z.enum(logLevels).default("info"),
  SERVICE_VERSION: z.string().min(1).default("v1"),
  /** A postgres:// URL. Without it (or empty) the service uses an embedded PGlite database. */
  DATABASE_URL: emptyIsUnset(
    z
      .string()
      .regex(/^postgres(ql)?:\/\//, "must be a postgres:// or postgresql:// URL")
      .optional(),
  ),
  /** Where the embedded database keeps its files; in memory when unset. */
  PGLITE_DATA_DIR: emptyIsUnset(z.string().min(1).optional()),
  /** How long SIGTERM waits for in-flight requests before closing connections. */
  SHUTDOWN_GRACE_MS: z.coerce.number().int().min(0).max(120_000).default(10_000),
  /** Largest request body accepted, in bytes; larger ones get resource_exhausted. */
  MAX_REQUEST_BYTES: z.coerce
    .number()
    .int()
    .min(1024)
    .default(64 * 1024),
  /** Event type → subscribing services (config/subscriptions.yaml in the repository). */
  EVENT_SUBSCRIPTIONS_FILE: z.string().min(1).default(defaultSubscriptionsFile),
  /** How often the outbox relay looks for due deliveries besides being woken by commits. */
  OUTBOX_POLL_MS: z.coerce.number().int().min(10).max(60_000).default(1000),
  /** Delivery attempts per subscriber before an event is parked as dead. */
  OUTBOX_MAX_ATTEMPTS: z.coerce.number().int().min(1).max(1000).default(25),
  OUTBOX_BASE_BACKOFF_MS: z.coerce.number().int().min(1).default(250),
  OUTBOX_MAX_BACKOFF_MS: z.coerce.number().int().min(1).default(30_000),
  /**
   * Deliver calls in flight per subscriber. Events due while all are busy go out together in
   * the next call. One keeps a consumer's transactions from contending with each other (and
   * batches best); raise it for consumers whose handlers wait on something slow.
   */
  OUTBOX_CONCURRENCY: z.coerce.number().int().min(1).max(256).default(1),
  /**
   * Hours an outbox event delivered to every subscriber, and an inbox record, are kept before
   * they are pruned (undelivered and dead events are never pruned).
   */
  EVENT_RETENTION_HOURS: z.coerce.number().int().min(1).max(87_600).default(168),
  /** Most events in one Deliver call (and one consumer transaction). */
  OUTBOX_BATCH_SIZE: z.coerce.number().int().min(1).max(500).default(32),
});

/**
 * What access tokens look like, shared by auth (which issues them) and every verifier (which
 * refuses tokens that do not fit): iss, aud, the lifetime, and the clock skew allowed.
 */
export const tokenIssuerConfigSchema = z.object({
  AUTH_ISSUER: z.string().min(1).default("https://auth.thinmesh.local"),
  AUTH_AUDIENCE: z.string().min(1).default("thinmesh"),
  /** auth issues access tokens for this long; verifiers refuse a longer exp − iat (plus skew). */
  AUTH_ACCESS_TOKEN_TTL_SECONDS: z.coerce
    .number()
    .int()
    .min(60)
    .max(24 * 3600)
    .default(15 * 60),
  /** How far clocks may disagree on exp, nbf and iat; 60 s is Envoy jwt_authn's default. */
  AUTH_CLOCK_SKEW_SECONDS: z.coerce.number().int().min(0).max(300).default(60),
});

/** Variables of services that verify access tokens issued by the auth service. */
export const tokenConfigSchema = tokenIssuerConfigSchema.extend({
  AUTH_JWKS_URL: z.url({ protocol: /^https?$/ }),
});

/** A boolean environment variable: "true"/"false", "1"/"0", "yes"/"no", "on"/"off". */
export const booleanFlag = z
  .enum(["true", "false", "1", "0", "yes", "no", "on", "off"])
  .transform((v) => v === "true" || v === "1" || v === "yes" || v === "on");
