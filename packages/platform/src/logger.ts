import { type Logger, pino } from "pino";
import { currentContext } from "./context.js";

export type { Logger } from "pino";

/** Paths pino replaces with "[redacted]" wherever they appear in a log line. */
export const redactedPaths = [
  "password",
  "*.password",
  "token",
  "*.token",
  "accessToken",
  "*.accessToken",
  "refreshToken",
  "*.refreshToken",
  "authorization",
  "*.authorization",
  "*.headers.authorization",
  "*.headers.cookie",
  '*.headers["set-cookie"]',
  "cookie",
  "*.cookie",
  "privateKey",
  "*.privateKey",
  "secret",
  "*.secret",
];

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
      mixin() {
        const context = currentContext();
        return context ? { requestId: context.requestId, traceId: context.traceId } : {};
      },
    },
    options.destination ?? pino.destination({ sync: false }),
  );
}
