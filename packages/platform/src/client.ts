import type { DescService } from "@bufbuild/protobuf";
import { type Client, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { currentContext } from "./context.js";
import { tracingClientInterceptor } from "./tracing.js";

/** Copies the current request's trace headers onto an outgoing call. */
export function forwardContextInterceptor(): Interceptor {
  return (next) => (req) => {
    const context = currentContext();
    if (context) {
      for (const [name, value] of Object.entries(context.propagation)) {
        if (!req.header.has(name)) req.header.set(name, value);
      }
    }
    return next(req);
  };
}

/**
 * A client for a peer service at the base URL from configuration. It deliberately has no
 * retries, timeouts or circuit breaking: in a cluster the sidecar provides them, and locally
 * mesh/local does, both from the same mesh/istio/ resources.
 */
export function createPeerClient<S extends DescService>(service: S, baseUrl: string): Client<S> {
  return createClient(
    service,
    createConnectTransport({
      baseUrl,
      httpVersion: "1.1",
      // Between services: protobuf's binary encoding (a fraction of JSON's CPU) and no
      // compression (the bytes stay inside the cluster; compressing costs more than it saves).
      useBinaryFormat: true,
      acceptCompression: [],
      // Forward the request's headers, then (with tracing on) replace the trace headers with
      // those of a client span for this call.
      interceptors: [forwardContextInterceptor(), tracingClientInterceptor()],
    }),
  );
}
