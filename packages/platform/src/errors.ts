/**
 * Errors the domain raises, free of any transport. One interceptor turns them into Connect
 * codes (and Hono routes into HTTP statuses), so handlers never translate errors themselves.
 */
export type ErrorKind =
  | "invalid_argument"
  | "not_found"
  | "already_exists"
  | "failed_precondition"
  | "unauthenticated"
  | "permission_denied"
  | "unavailable";

export class DomainError extends Error {
  constructor(
    readonly kind: ErrorKind,
    message: string,
  ) {
    super(message);
    this.name = "DomainError";
  }
}

export const invalidArgument = (message: string) => new DomainError("invalid_argument", message);
export const notFound = (message: string) => new DomainError("not_found", message);
export const alreadyExists = (message: string) => new DomainError("already_exists", message);
export const failedPrecondition = (message: string) =>
  new DomainError("failed_precondition", message);
export const unauthenticated = (message: string) => new DomainError("unauthenticated", message);
export const permissionDenied = (message: string) => new DomainError("permission_denied", message);
export const unavailable = (message: string) => new DomainError("unavailable", message);

/** Error codes of failures that waiting (and retrying the same request) can fix. */
const transientCodes = new Set([
  // postgres.js: the connection to the database went away or could not be made in time.
  "CONNECTION_CLOSED",
  "CONNECTION_ENDED",
  "CONNECTION_DESTROYED",
  "CONNECT_TIMEOUT",
  // Node's socket errors: a peer or the database restarting, draining or unreachable.
  "ECONNRESET",
  "ECONNREFUSED",
  "ECONNABORTED",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EAI_AGAIN",
  // Postgres SQLSTATEs: admin_shutdown, crash_shutdown, cannot_connect_now,
  // too_many_connections, serialization_failure, deadlock_detected (class 08 below).
  "57P01",
  "57P02",
  "57P03",
  "53300",
  "40001",
  "40P01",
]);

/** Postgres SQLSTATEs for text the database cannot store (a NUL byte, invalid UTF-8). */
const unstorableTextStates = new Set(["22021", "22P05"]);

/** The errors in an error's cause chain, outermost first. */
function causeChain(error: unknown): object[] {
  const chain: object[] = [];
  for (let e = error; e && typeof e === "object" && chain.length < 10; ) {
    chain.push(e);
    e = (e as { cause?: unknown }).cause;
  }
  return chain;
}

const codeOfError = (e: object) => {
  const code = (e as { code?: unknown }).code;
  return typeof code === "string" ? code : undefined;
};

/**
 * Why an error is transient (the database or a peer is restarting, unreachable or lost the
 * connection; a serialization conflict), or undefined. Such failures are answered as
 * unavailable: the caller may retry, and every write here is idempotent.
 */
export function transientCause(error: unknown): string | undefined {
  for (const e of causeChain(error)) {
    const code = codeOfError(e);
    if (code && (transientCodes.has(code) || /^08[0-9A-Z]{3}$/.test(code))) return code;
    // A database on a Unix socket that is restarting: its socket file is missing for a while.
    if (code === "ENOENT" && (e as { syscall?: unknown }).syscall === "connect") return code;
  }
  return undefined;
}

/** True when the database refused a text value it cannot store (e.g. one with a NUL byte). */
export function isUnstorableText(error: unknown): boolean {
  return causeChain(error).some((e) => unstorableTextStates.has(codeOfError(e) ?? ""));
}
