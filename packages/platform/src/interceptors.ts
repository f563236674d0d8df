import { ValidationError } from "@bufbuild/protovalidate";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { createValidateInterceptor } from "@connectrpc/validate";
import { procedurePath } from "./access.js";
import { peerProcedureOf } from "./client.js";
import { contextFromHeaders, runWithContext } from "./context.js";
import { DomainError, type ErrorKind, isUnstorableText, transientCause } from "./errors.js";
import type { Logger } from "./logger.js";
import type { Metrics } from "./metrics.js";
import { fieldWithNul } from "./text-check.js";

/** Puts the request's trace context in scope for logging and outgoing calls. */
export function contextInterceptor(): Interceptor {
  return (next) => (req) => {
    const context = contextFromHeaders(req.header);
    return runWithContext(context, () => next(req));
  };
}

const codeOf: Record<ErrorKind, Code> = {
  invalid_argument: Code.InvalidArgument,
  not_found: Code.NotFound,
  already_exists: Code.AlreadyExists,
  failed_precondition: Code.FailedPrecondition,
  unauthenticated: Code.Unauthenticated,
  permission_denied: Code.PermissionDenied,
  unavailable: Code.Unavailable,
};

/**
 * Turns domain errors into Connect codes, and anything unexpected into "internal" with the
 * request id to look it up by (the cause is logged, never sent). Logs and counts every RPC.
 */
export function observeInterceptor(logger: Logger, metrics: Metrics): Interceptor {
  return (next) => async (req) => {
    const method = procedurePath(req.method);
    const started = performance.now();
    let code = "ok";
    try {
      return await next(req);
    } catch (error) {
      const connectError = toConnectError(error, logger, method);
      code = Code[connectError.code].replace(/[A-Z]/g, (c, i) => (i ? "_" : "") + c.toLowerCase());
      throw connectError;
    } finally {
      const seconds = (performance.now() - started) / 1000;
      metrics.rpcHandled.inc({ method, code });
      metrics.rpcDuration.observe({ method }, seconds);
      const line = {
        rpc: method,
        protocol: req.header.get("content-type"),
        code,
        ms: seconds * 1000,
      };
      if (code === "ok") logger.debug(line, "rpc");
      else logger.info(line, "rpc failed");
    }
  };
}

// A peer's answers a caller can act on by waiting and retrying. Any other answer of a peer
// (invalid_argument, not_found, permission_denied, ...) means this service called it wrongly:
// our bug, answered as internal and logged.
const passedOnPeerCodes = new Set([
  Code.Unavailable,
  Code.DeadlineExceeded,
  Code.ResourceExhausted,
]);

/** The Connect error a caller may see for any error thrown while handling `method`. */
export function toConnectError(error: unknown, logger: Logger, method: string): ConnectError {
  if (error instanceof DomainError) return new ConnectError(error.message, codeOf[error.kind]);
  const peer = peerProcedureOf(error);
  if (peer && error instanceof ConnectError) {
    if (passedOnPeerCodes.has(error.code)) {
      logger.warn({ err: error, rpc: method, peer }, "peer call failed");
      return new ConnectError(
        `a service this call depends on failed (${peer}: ${error.rawMessage}); try again shortly`,
        error.code,
      );
    }
  } else if (error instanceof ConnectError && !transientCause(error)) {
    return error;
  }
  const transient = transientCause(error);
  if (transient) {
    logger.warn({ err: error, rpc: method }, "transient failure; answered unavailable");
    return new ConnectError(
      `temporarily unavailable (${transient}); try again shortly`,
      Code.Unavailable,
    );
  }
  if (isUnstorableText(error)) {
    return new ConnectError(
      "a text field holds a character that cannot be stored (a NUL byte, U+0000, or invalid UTF-8); remove it",
      Code.InvalidArgument,
    );
  }
  logger.error({ err: error, rpc: method }, "unexpected error in handler");
  return new ConnectError(
    "internal error; the service logged the cause with this request's id",
    Code.Internal,
  );
}

/** Refuses RPCs until the service is ready (database reachable, migrations applied). */
export function readinessInterceptor(
  service: string,
  notReadyReason: () => string | undefined,
): Interceptor {
  return (next) => (req) => {
    const reason = notReadyReason();
    if (reason) {
      throw new ConnectError(
        `${service} is not ready: ${reason}; try again shortly`,
        Code.Unavailable,
      );
    }
    return next(req);
  };
}

/**
 * Enforces the protovalidate rules declared in the contracts. The error lists every violated
 * field in its message (the library names only the first) and carries the structured
 * violations as a detail.
 */
export function validationInterceptor(): Interceptor {
  const validate = createValidateInterceptor();
  return (next) => {
    const validated = validate(next);
    return async (req) => {
      const withNul = req.stream ? undefined : fieldWithNul(req.method.input, req.message);
      if (withNul) {
        throw new ConnectError(
          `invalid request: ${withNul}: must not contain a NUL character (U+0000)`,
          Code.InvalidArgument,
        );
      }
      try {
        return await validated(req);
      } catch (error) {
        if (error instanceof ConnectError && error.cause instanceof ValidationError) {
          const violations = error.cause.violations.map((v) => v.toString()).join("; ");
          throw new ConnectError(
            `invalid request: ${violations}`,
            Code.InvalidArgument,
            undefined,
            error.details as ConstructorParameters<typeof ConnectError>[3],
            error.cause,
          );
        }
        throw error;
      }
    };
  };
}
