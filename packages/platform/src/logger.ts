import { type Logger, pino } from "pino";
import { currentContext } from "./context.js";

export type { Logger } from "pino";

// Fields that hold secrets wherever they appear: credentials, tokens of every kind (access,
// refresh, payment), keys. Both the proto JSON names and the field names are listed.
const secretFields = [
  "password",
  "token",
  "accessToken",
  "access_token",
  "refreshToken",
  "refresh_token",
  "paymentToken",
  "payment_token",
  "authorization",
  "cookie",
  '"set-cookie"',
  "privateKey",
  "secret",
  "clientSecret",
  "apiKey",
  "api_key",
];

/** Paths pino replaces with "[redacted]" wherever they appear in a log line (3 levels deep). */
export const redactedPaths = secretFields.flatMap((field) => {
  const key = field.startsWith('"') ? `[${field}]` : `.${field}`;
  return [key.slice(key.startsWith(".") ? 1 : 0), `*${key}`, `*.*${key}`];
});

// Query parameters named like a secret: OAuth's access_token, ?token=, ?api_key=, a
// password, a client secret, an authorization code.
const secretParameter = /token|secret|passw|key|code|auth|session|signature|credential/i;

/**
 * A request target (path and query) safe to log: the value of every query parameter named
 * like a secret is replaced with "[redacted]"; names and the path stay.
 */
export function redactQuery(target: string): string {
  const queryStart = target.indexOf("?");
  if (queryStart < 0) return target;
  const fragmentStart = target.indexOf("#", queryStart);
  const query = target.slice(queryStart + 1, fragmentStart < 0 ? undefined : fragmentStart);
  const redacted = query
    .split("&")
    .map((pair) => {
      const equals = pair.indexOf("=");
      const rawName = equals < 0 ? pair : pair.slice(0, equals);
      let name = rawName;
      try {
        name = decodeURIComponent(rawName.replace(/\+/g, " "));
      } catch {
        // An undecodable name is checked as it was sent.
      }
      return equals >= 0 && secretParameter.test(name) ? `${rawName}=[redacted]` : pair;
    })
    .join("&");
  return `${target.slice(0, queryStart)}?${redacted}`;
}

// drizzle puts the query's parameters into its error message ("params: a,b,c"), and
// postgres.js can attach them to its errors: payment tokens, password hashes, emails.
const parametersInMessage = /\nparams: [\s\S]*?(?=\n {4}at |$)/;
const parameterKeys = ["params", "parameters", "args"];

/**
 * pino's error serialiser (with causes), minus the query parameters database errors carry.
 * The query text itself stays: it names the statement and holds no values.
 */
export function serializeError(error: unknown): unknown {
  const serialized = pino.stdSerializers.errWithCause(error as Error) as unknown;
  return withoutParameters(serialized, 0);
}

function withoutParameters(value: unknown, depth: number): unknown {
  if (!value || typeof value !== "object" || depth > 10) return value;
  const record = value as Record<string, unknown>;
  for (const key of parameterKeys) {
    if (key in record) delete record[key];
  }
  // Postgres quotes the offending value in data errors (class 22: "invalid input syntax for
  // type integer: \"tok_...\"") and the key in constraint errors (class 23, in detail).
  const quotesValues = typeof record.code === "string" && /^2[23][0-9A-Z]{3}$/.test(record.code);
  if (quotesValues) delete record.detail;
  for (const key of ["message", "stack"]) {
    if (typeof record[key] === "string") {
      let text = (record[key] as string).replace(parametersInMessage, "\nparams: [redacted]");
      if (quotesValues) text = text.replace(/"[^"\n]*"/g, '"[redacted]"');
      record[key] = text;
    }
  }
  for (const [key, nested] of Object.entries(record)) {
    if (nested && typeof nested === "object" && key !== "raw") withoutParameters(nested, depth + 1);
  }
  return record;
}

export interface LoggerOptions {
  service: string;
  version: string;
  level: string;
  /** Where lines go; stdout by default. */
  destination?: pino.DestinationStream;
}

/**
 * JSON logs with the service, its version, and (inside a request) the request id and trace id
 * on every line.
 */
export function createLogger(options: LoggerOptions): Logger {
  return pino(
    {
      level: options.level,
      base: { service: options.service, version: options.version },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: redactedPaths, censor: "[redacted]" },
      serializers: { err: serializeError, error: serializeError },
      mixin() {
        const context = currentContext();
        return context ? { requestId: context.requestId, traceId: context.traceId } : {};
      },
    },
    options.destination ?? pino.destination({ sync: false }),
  );
}

interface AsyncDestination {
  flushSync?: () => void;
  /** SonicBoom's flag for a write handed to the OS and not yet finished. */
  _writing?: boolean;
}

const destinationOf = (logger: Logger) =>
  (logger as unknown as Record<symbol, AsyncDestination | undefined>)[pino.symbols.streamSym];

/**
 * Writes every buffered log line before the process exits. The default destination writes
 * asynchronously, and process.exit() drops what it still holds: the "stopped" line, or the
 * line that says why the process ends. Waits up to timeoutMs for a write in progress.
 */
export async function flushLogs(logger: Logger, timeoutMs = 2_000): Promise<void> {
  const destination = destinationOf(logger);
  const deadline = Date.now() + timeoutMs;
  while (destination?._writing && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  flushLogsSync(logger);
}

/** flushLogs for where nothing may wait (an uncaught exception): what is buffered, now. */
export function flushLogsSync(logger: Logger): void {
  try {
    destinationOf(logger)?.flushSync?.();
  } catch {
    // The destination is not open (yet) or is gone: nothing can be written anyway.
  }
}
