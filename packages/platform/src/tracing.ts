import type { Interceptor } from "@connectrpc/connect";
import type { SpanExporter } from "@opentelemetry/sdk-trace-base";
import { ConfigError } from "./config.js";
import { propagatedHeaders } from "./context.js";

/**
 * OpenTelemetry spans for RPCs, exported over OTLP/HTTP when an endpoint is configured
 * (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, or OTEL_EXPORTER_OTLP_ENDPOINT + "/v1/traces").
 *
 * The sidecars make the spans of every hop; these add what happens inside a service: a SERVER
 * span per RPC (the child of the caller's span in the incoming traceparent or B3 headers, so it
 * joins the sidecar's trace) and a CLIENT span per outgoing call, whose context the outgoing
 * traceparent and B3 headers carry. Without an endpoint nothing here runs: the server
 * interceptor is the identity and outgoing calls forward the incoming headers unchanged.
 *
 * The trace identity lives in the platform's RequestContext: inside a traced RPC its
 * propagation headers describe the server span, so log lines, outgoing calls and published
 * events (whose envelopes keep the traceparent) all continue this span.
 *
 * This module stays light: OpenTelemetry itself (tracing-sdk.ts) is loaded only when tracing is
 * on, because a service without an endpoint would otherwise carry ~20 MB and ~100 ms of
 * start-up it never uses.
 */

export interface TracingOptions {
  /** service.name (OTEL_SERVICE_NAME overrides it). */
  service: string;
  /** service.version. */
  version: string;
  /** The environment variables to read (the process's by default). */
  env?: Record<string, string | undefined>;
  /**
   * Where spans go instead of the OTLP exporter (tests). Spans are still made only when an
   * endpoint is configured, so a test sees exactly what production would export.
   */
  exporter?: SpanExporter;
  /** Told when spans cannot be exported (at most once a minute); nothing is thrown. */
  onExportError?: (error: Error) => void;
}

export interface Tracing {
  /** Whether spans are made and exported (an endpoint is configured). */
  readonly enabled: boolean;
  /** The Connect server interceptor; place it right after contextInterceptor(). */
  serverInterceptor(): Interceptor;
  /** A Connect client interceptor bound to this instance (see tracingClientInterceptor). */
  clientInterceptor(): Interceptor;
  /** Exports the spans that have ended. */
  forceFlush(): Promise<void>;
  /** Exports what is left (waiting at most a few seconds) and stops. */
  shutdown(): Promise<void>;
}

/** The headers that carry a trace's identity (all of propagatedHeaders but x-request-id). */
export const traceHeaders = propagatedHeaders.filter((name) => name !== "x-request-id");

/** The OTLP/HTTP traces URL from the environment, or undefined when tracing is off. */
export function otlpTracesUrl(env: Record<string, string | undefined>): string | undefined {
  if (/^(true|1)$/i.test(env.OTEL_SDK_DISABLED?.trim() ?? "")) return undefined;
  if (env.OTEL_TRACES_EXPORTER?.trim() === "none") return undefined;
  const [variable, url] = (() => {
    const traces = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT?.trim();
    if (traces) return ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", traces] as const;
    const base = env.OTEL_EXPORTER_OTLP_ENDPOINT?.trim();
    if (base) return ["OTEL_EXPORTER_OTLP_ENDPOINT", `${base.replace(/\/+$/, "")}/v1/traces`];
    return [undefined, undefined];
  })();
  if (!variable || !url) return undefined;
  let parsed: URL | undefined;
  try {
    parsed = new URL(url);
  } catch {}
  if (!parsed || !/^https?:$/.test(parsed.protocol)) {
    throw new ConfigError([
      `${variable}: must be an http(s) URL of an OTLP/HTTP collector (got ${JSON.stringify(env[variable])})`,
    ]);
  }
  return url;
}

/** The client interceptor of the enabled instance, if any (set by tracing-sdk.ts). */
let activeClient: Interceptor | undefined;

/** For tracing-sdk.ts: which instance traces outgoing calls (undefined: none). */
export function setActiveClientTracing(
  interceptor: Interceptor | undefined,
  replacing?: Interceptor,
) {
  if (replacing === undefined || activeClient === replacing) activeClient = interceptor;
}

/**
 * A Connect client interceptor for outgoing calls: with tracing enabled, a CLIENT span whose
 * context replaces the trace headers of the call; otherwise it does nothing. Place it after
 * forwardContextInterceptor() (which copies x-request-id and the trace headers).
 */
export function tracingClientInterceptor(): Interceptor {
  return (next) => (req) => (activeClient ? activeClient(next)(req) : next(req));
}

const disabledTracing: Tracing = {
  enabled: false,
  serverInterceptor: () => (next) => next,
  clientInterceptor: () => (next) => next,
  forceFlush: async () => {},
  shutdown: async () => {},
};

/**
 * Sets up tracing for one service. Returns a no-op when no OTLP endpoint is configured.
 * Enabled, it becomes the instance tracingClientInterceptor() uses (the latest one started).
 */
export async function initTracing(options: TracingOptions): Promise<Tracing> {
  const env = options.env ?? process.env;
  const url = otlpTracesUrl(env);
  if (!url) return disabledTracing;
  const { startTracing } = await import("./tracing-sdk.js");
  return startTracing(options, env, url);
}
