import { AsyncLocalStorage } from "node:async_hooks";
import { randomUUID } from "node:crypto";

/** Zipkin's B3 headers (single and multi), which Envoy's Zipkin tracer reads and writes. */
export const b3Headers = [
  "b3",
  "x-b3-traceid",
  "x-b3-spanid",
  "x-b3-parentspanid",
  "x-b3-sampled",
  "x-b3-flags",
] as const;

/**
 * Headers that carry one transaction's identity across hops. The sidecars (or mesh/local)
 * create spans from them; a service only has to pass them on unchanged to every call it makes
 * while handling a request, so that all spans join one trace.
 */
export const propagatedHeaders = [
  "x-request-id",
  "traceparent",
  "tracestate",
  ...b3Headers,
] as const;

export interface RequestContext {
  requestId: string;
  traceId: string;
  /** The headers to forward on outgoing calls (see propagatedHeaders). */
  propagation: Record<string, string>;
}

const storage = new AsyncLocalStorage<RequestContext>();

/** The context of the request being handled, if any. */
export function currentContext(): RequestContext | undefined {
  return storage.getStore();
}

export function runWithContext<T>(context: RequestContext, fn: () => T): T {
  return storage.run(context, fn);
}

const traceparentPattern = /^[\da-f]{2}-([\da-f]{32})-([\da-f]{16})-[\da-f]{2}$/;

/**
 * Reads the trace headers of an incoming request. Where the caller sent none (no mesh in
 * front, or a direct call), a request id and a W3C traceparent are started here so that the
 * log lines and every downstream call still share one trace id.
 */
export function contextFromHeaders(headers: Pick<Headers, "get">): RequestContext {
  const propagation: Record<string, string> = {};
  for (const name of propagatedHeaders) {
    const value = headers.get(name);
    if (value) propagation[name] = value;
  }
  let traceId = traceIdOf(propagation);
  if (!traceId) {
    // From randomUUID(), which draws on a pooled buffer: randomBytes() asks the kernel every
    // time, once per request here. 122 random bits are plenty for a trace id.
    traceId = randomUUID().replaceAll("-", "");
    const spanId = randomUUID().replaceAll("-", "").slice(0, 16);
    propagation.traceparent = `00-${traceId}-${spanId}-01`;
  }
  propagation["x-request-id"] ??= randomUUID();
  return { requestId: propagation["x-request-id"], traceId, propagation };
}

function traceIdOf(propagation: Record<string, string>): string | undefined {
  const w3c = propagation.traceparent?.toLowerCase().match(traceparentPattern)?.[1];
  if (w3c && !/^0+$/.test(w3c)) return w3c;
  const b3 = propagation["x-b3-traceid"] ?? propagation.b3?.split("-")[0];
  if (b3 && /^([\da-f]{16}|[\da-f]{32})$/i.test(b3)) return b3.toLowerCase().padStart(32, "0");
  return undefined;
}

/** A fresh context for work that does not start from a request (startup, background jobs). */
export function newContext(): RequestContext {
  return contextFromHeaders(noHeaders);
}

const noHeaders = { get: () => null };

/**
 * The context of work an event causes, in the event's trace: its traceparent and tracestate
 * are the trace headers of the step that published it.
 */
export function contextOfTrace({
  traceparent,
  tracestate,
}: {
  traceparent: string;
  tracestate: string;
}): RequestContext {
  const headers: Record<string, string> = { traceparent, tracestate };
  return contextFromHeaders({ get: (name) => headers[name] || null });
}
