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
