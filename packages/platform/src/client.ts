import type { DescService } from "@bufbuild/protobuf";
import {
  type Client,
  Code,
  ConnectError,
  createClient,
  type Interceptor,
} from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { currentContext } from "./context.js";
import { transientCause } from "./errors.js";
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

const peerProcedure = Symbol("thinmesh.peerProcedure");

/**
 * The peer RPC (e.g. /shop.catalog.v1.CatalogService/GetProducts) an error came from: the
 * peer's answer or a failure to reach it; undefined for any other error. Handlers that let
 * such an error pass are answered by observeInterceptor by what the caller can do about it.
 */
export function peerProcedureOf(error: unknown): string | undefined {
  return error instanceof ConnectError
    ? (error as { [peerProcedure]?: string })[peerProcedure]
    : undefined;
}

/**
 * Marks every error of an outgoing call as the peer's (peerProcedureOf). A connection the peer reset or
 * closed (EPIPE, ECONNRESET: a peer draining or restarting) becomes unavailable; connect-node
 * reports those as internal or aborted, which would tell callers not to retry.
 */
export function peerErrorInterceptor(): Interceptor {
  return (next) => async (req) => {
    try {
      return await next(req);
    } catch (error) {
      let connectError = ConnectError.from(error);
      const transient = transientCause(error);
      if (transient && connectError.code !== Code.Unavailable) {
        connectError = new ConnectError(
          `${connectError.rawMessage} (${transient})`,
          Code.Unavailable,
          connectError.metadata,
          undefined,
          error,
        );
      }
      // A plain ConnectError (services check its code), marked as the peer's.
      Object.defineProperty(connectError, peerProcedure, {
        value: `/${req.service.typeName}/${req.method.name}`,
      });
      throw connectError;
    }
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
      interceptors: [
        peerErrorInterceptor(),
        forwardContextInterceptor(),
        tracingClientInterceptor(),
      ],
    }),
  );
}
