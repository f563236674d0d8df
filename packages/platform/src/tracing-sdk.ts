import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import {
  type Attributes,
  type Context,
  isSpanContextValid,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  type TextMapGetter,
  type TextMapPropagator,
  type TextMapSetter,
  TraceFlags,
  type Tracer,
  trace,
} from "@opentelemetry/api";
import {
  CompositePropagator,
  ExportResultCode,
  W3CTraceContextPropagator,
} from "@opentelemetry/core";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { resourceFromAttributes } from "@opentelemetry/resources";
import {
  BatchSpanProcessor,
  ParentBasedSampler,
  type ReadableSpan,
  type SpanExporter,
  TraceIdRatioBasedSampler,
} from "@opentelemetry/sdk-trace-base";
import { NodeTracerProvider } from "@opentelemetry/sdk-trace-node";
import {
  ATTR_ERROR_TYPE,
  ATTR_RPC_METHOD,
  ATTR_RPC_STATUS_CODE,
  ATTR_RPC_SYSTEM_NAME,
  ATTR_SERVER_ADDRESS,
  ATTR_SERVER_PORT,
  ATTR_SERVICE_NAME,
  ATTR_SERVICE_VERSION,
} from "@opentelemetry/semantic-conventions";
import { procedurePath } from "./access.js";
import {
  b3Headers,
  contextFromHeaders,
  currentContext,
  type RequestContext,
  runWithContext,
} from "./context.js";

import {
  setActiveClientTracing,
  type Tracing,
  type TracingOptions,
  traceHeaders,
} from "./tracing.js";

// OpenTelemetry for the platform's RPCs; see tracing.ts for what it does and why it is
// loaded only when an OTLP endpoint is configured.

const shutdownTimeoutMs = 3_000;
const exportErrorIntervalMs = 60_000;

/** Tracing with the OpenTelemetry SDK; initTracing() loads this module when it is on. */
export function startTracing(
  options: TracingOptions,
  env: Record<string, string | undefined>,
  url: string,
): Tracing {
  const exporter = reportingErrors(
    options.exporter ?? new OTLPTraceExporter({ url }),
    options.onExportError,
  );
  const provider = new NodeTracerProvider({
    resource: resourceFromAttributes({
      [ATTR_SERVICE_NAME]: options.service,
      [ATTR_SERVICE_VERSION]: options.version,
      ...parseResourceAttributes(env.OTEL_RESOURCE_ATTRIBUTES),
      ...(env.OTEL_SERVICE_NAME?.trim()
        ? { [ATTR_SERVICE_NAME]: env.OTEL_SERVICE_NAME.trim() }
        : {}),
    }),
    // The sidecar decides whether a request is sampled (its traceparent's flag); this ratio
    // only applies to traces that start here (calls that did not come through a sidecar).
    sampler: new ParentBasedSampler({
      root: new TraceIdRatioBasedSampler(samplingRatio(env.OTEL_TRACES_SAMPLER_ARG)),
    }),
    spanProcessors: [new BatchSpanProcessor(exporter)],
  });
  const traced: ActiveTracing = {
    tracer: provider.getTracer("@thinmesh/platform", options.version),
    propagator,
  };
  const client: Interceptor = (next) => (req) => traceCall(traced, next, req);
  setActiveClientTracing(client);

  let stopped: Promise<void> | undefined;
  return {
    enabled: true,
    serverInterceptor: () => serverInterceptor(traced),
    clientInterceptor: () => client,
    forceFlush: () => provider.forceFlush(),
    shutdown() {
      stopped ??= (async () => {
        setActiveClientTracing(undefined, client);
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([
          provider.shutdown().catch(() => {}),
          new Promise<void>((resolve) => {
            timer = setTimeout(resolve, shutdownTimeoutMs);
          }),
        ]);
        clearTimeout(timer);
      })();
      return stopped;
    },
  };
}

interface ActiveTracing {
  tracer: Tracer;
  propagator: TextMapPropagator;
}

type UnaryOrStream = Awaited<ReturnType<Parameters<Interceptor>[0]>>;
type AnyRequest = Parameters<Parameters<Interceptor>[0]>[0];

function serverInterceptor(traced: ActiveTracing): Interceptor {
  return (next) => async (req) => {
    const outer = currentContext() ?? contextFromHeaders(req.header);
    // Without trace headers the request came from outside any mesh: a new trace starts here
    // (the traceparent contextFromHeaders made up names no span that exists).
    const parent = traceHeaders.some((name) => req.header.has(name))
      ? traced.propagator.extract(ROOT_CONTEXT, req.header, headersGetter)
      : ROOT_CONTEXT;
    const span = traced.tracer.startSpan(
      procedurePath(req.method),
      { kind: SpanKind.SERVER, attributes: rpcAttributes(req) },
      parent,
    );
    const inSpan: RequestContext = {
      ...outer,
      traceId: span.spanContext().traceId,
      propagation: propagationOf(traced, trace.setSpan(parent, span), outer.propagation),
    };
    try {
      const res = await runWithContext(inSpan, () => next(req));
      return endWithResponse(span, SpanKind.SERVER, res);
    } catch (error) {
      end(span, SpanKind.SERVER, error);
      throw error;
    }
  };
}

async function traceCall(
  traced: ActiveTracing,
  next: Parameters<Interceptor>[0],
  req: AnyRequest,
): Promise<UnaryOrStream> {
  const context = currentContext();
  const parent = context
    ? traced.propagator.extract(ROOT_CONTEXT, context.propagation, recordGetter)
    : ROOT_CONTEXT;
  const attributes = rpcAttributes(req);
  try {
    const url = new URL(req.url);
    attributes[ATTR_SERVER_ADDRESS] = url.hostname;
    attributes[ATTR_SERVER_PORT] = Number(url.port || (url.protocol === "https:" ? 443 : 80));
  } catch {}
  const span = traced.tracer.startSpan(
    procedurePath(req.method),
    { kind: SpanKind.CLIENT, attributes },
    parent,
  );
  for (const name of traceHeaders) req.header.delete(name);
  traced.propagator.inject(trace.setSpan(parent, span), req.header, headersSetter);
  try {
    return endWithResponse(span, SpanKind.CLIENT, await next(req));
  } catch (error) {
    end(span, SpanKind.CLIENT, error);
    throw error;
  }
}

/** The propagation headers of a context in span: x-request-id kept, trace headers replaced. */
function propagationOf(
  traced: ActiveTracing,
  context: Context,
  previous: Record<string, string>,
): Record<string, string> {
  const propagation: Record<string, string> = {};
  for (const [name, value] of Object.entries(previous)) {
    if (!(traceHeaders as readonly string[]).includes(name)) propagation[name] = value;
  }
  traced.propagator.inject(context, propagation, recordSetter);
  return propagation;
}

function rpcAttributes(req: AnyRequest): Attributes {
  return {
    [ATTR_RPC_SYSTEM_NAME]: "connectrpc",
    [ATTR_RPC_METHOD]: procedurePath(req.method).slice(1),
  };
}

/** Unary responses end the span now; streams when their last message has gone. */
function endWithResponse(span: Span, kind: SpanKind, res: UnaryOrStream): UnaryOrStream {
  if (!res.stream) {
    end(span, kind);
    return res;
  }
  const messages = res.message;
  return {
    ...res,
    message: (async function* () {
      let failure: unknown;
      try {
        yield* messages;
      } catch (error) {
        failure = error;
        throw error;
      } finally {
        end(span, kind, failure);
      }
    })(),
  } as UnaryOrStream;
}

// Codes that mean the server failed (OpenTelemetry's RPC conventions); the others are the
// caller's problem and do not mark a server span as an error. Client spans mark every error.
const serverFaults = new Set([
  Code.Unknown,
  Code.DeadlineExceeded,
  Code.Unimplemented,
  Code.Internal,
  Code.Unavailable,
  Code.DataLoss,
]);

function end(span: Span, kind: SpanKind, error?: unknown) {
  if (error === undefined) {
    span.setAttribute(ATTR_RPC_STATUS_CODE, "ok");
  } else {
    const connectError = ConnectError.from(error);
    const code = codeName(connectError.code);
    span.setAttribute(ATTR_RPC_STATUS_CODE, code);
    if (kind === SpanKind.CLIENT || serverFaults.has(connectError.code)) {
      span.setAttribute(ATTR_ERROR_TYPE, code);
      span.setStatus({ code: SpanStatusCode.ERROR, message: connectError.rawMessage });
      span.recordException(connectError);
    }
  }
  span.end();
}

/** Connect's code names: Code.NotFound → "not_found". */
function codeName(code: Code): string {
  return Code[code].replace(/[A-Z]/g, (c, i) => (i ? "_" : "") + c.toLowerCase());
}

function samplingRatio(value: string | undefined): number {
  const ratio = Number(value);
  return value?.trim() && Number.isFinite(ratio) && ratio >= 0 && ratio <= 1 ? ratio : 1;
}

/** OTEL_RESOURCE_ATTRIBUTES: key1=value1,key2=value2 (values percent-encoded). */
function parseResourceAttributes(value: string | undefined): Record<string, string> {
  const attributes: Record<string, string> = {};
  for (const pair of value?.split(",") ?? []) {
    const at = pair.indexOf("=");
    if (at <= 0) continue;
    try {
      attributes[pair.slice(0, at).trim()] = decodeURIComponent(pair.slice(at + 1).trim());
    } catch {}
  }
  return attributes;
}

function reportingErrors(
  exporter: SpanExporter,
  onError: ((error: Error) => void) | undefined,
): SpanExporter {
  if (!onError) return exporter;
  let lastReport = Number.NEGATIVE_INFINITY;
  return {
    export(spans: ReadableSpan[], done) {
      exporter.export(spans, (result) => {
        if (
          result.code !== ExportResultCode.SUCCESS &&
          Date.now() - lastReport >= exportErrorIntervalMs
        ) {
          lastReport = Date.now();
          onError(result.error ?? new Error(`could not export ${spans.length} spans`));
        }
        done(result);
      });
    },
    shutdown: () => exporter.shutdown(),
    forceFlush: () => exporter.forceFlush?.() ?? Promise.resolve(),
  };
}

const headersGetter: TextMapGetter<Headers> = {
  get: (carrier, key) => carrier.get(key) ?? undefined,
  keys: (carrier) => [...carrier.keys()],
};
const headersSetter: TextMapSetter<Headers> = {
  set: (carrier, key, value) => carrier.set(key, value),
};
const recordGetter: TextMapGetter<Record<string, string>> = {
  get: (carrier, key) => carrier[key],
  keys: (carrier) => Object.keys(carrier),
};
const recordSetter: TextMapSetter<Record<string, string>> = {
  set: (carrier, key, value) => {
    carrier[key] = value;
  },
};

const first = (value: string | string[] | undefined) => (Array.isArray(value) ? value[0] : value);

/**
 * Zipkin's B3 headers, read in both encodings (x-b3-* and the single "b3" header) and written
 * as x-b3-* (what Envoy's Zipkin tracer reads). Where a request carries both, W3C wins.
 */
const b3Propagator: TextMapPropagator = {
  inject(context, carrier, setter) {
    const spanContext = trace.getSpanContext(context);
    if (!spanContext || !isSpanContextValid(spanContext)) return;
    setter.set(carrier, "x-b3-traceid", spanContext.traceId);
    setter.set(carrier, "x-b3-spanid", spanContext.spanId);
    setter.set(carrier, "x-b3-sampled", spanContext.traceFlags & TraceFlags.SAMPLED ? "1" : "0");
  },
  extract(context, carrier, getter) {
    let traceId: string | undefined;
    let spanId: string | undefined;
    let sampled: string | undefined;
    const single = first(getter.get(carrier, "b3"))?.trim().toLowerCase();
    if (single) {
      [traceId, spanId, sampled] = single.split("-");
    } else {
      traceId = first(getter.get(carrier, "x-b3-traceid"))?.trim().toLowerCase();
      spanId = first(getter.get(carrier, "x-b3-spanid"))?.trim().toLowerCase();
      sampled = first(getter.get(carrier, "x-b3-sampled"))?.trim().toLowerCase();
      if (first(getter.get(carrier, "x-b3-flags"))?.trim() === "1") sampled = "d";
    }
    if (!traceId || !spanId || !/^([\da-f]{16}|[\da-f]{32})$/.test(traceId)) return context;
    if (!/^[\da-f]{16}$/.test(spanId)) return context;
    const spanContext = {
      traceId: traceId.padStart(32, "0"),
      spanId,
      isRemote: true,
      // A deferred decision (no sampling state) is taken here: sampled.
      traceFlags: sampled === "0" || sampled === "false" ? TraceFlags.NONE : TraceFlags.SAMPLED,
    };
    return isSpanContextValid(spanContext) ? trace.setSpanContext(context, spanContext) : context;
  },
  fields: () => [...b3Headers],
};

/** W3C trace context and B3; extraction prefers traceparent (the later propagator wins). */
const propagator: TextMapPropagator = new CompositePropagator({
  propagators: [b3Propagator, new W3CTraceContextPropagator()],
});
