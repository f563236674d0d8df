import type { z } from "zod";
import { invalidArgument } from "./errors.js";

/** The page sizes a listing allows: what a size of 0 means, and the most it serves at once. */
export interface PageSizeLimits {
  default: number;
  max: number;
}

/**
 * The page size to use for a requested one: 0 means the default; a negative, fractional or
 * too large size is invalid_argument.
 */
export function pageSizeOf(requested: number, limits: PageSizeLimits): number {
  if (requested === 0) return limits.default;
  if (!Number.isInteger(requested) || requested < 0 || requested > limits.max) {
    throw invalidArgument(`page_size must be between 0 and ${limits.max}, got ${requested}`);
  }
  return requested;
}

/**
 * A page token: where a listing continues, as base64url of a small JSON object, so that
 * clients treat it as opaque and the service stays free to change what it holds.
 */
export function encodeCursor(value: object): string {
  return Buffer.from(JSON.stringify(value)).toString("base64url");
}

/**
 * The value of a page token encodeCursor issued, checked against `schema`: the JSON as encoded,
 * without transforms, its keys in the order the service encodes them. Anything else is invalid_argument with `rejection`:
 * characters outside the base64url alphabet, no JSON, another shape, and any token that is
 * not exactly what encodeCursor gives for the value (extra fields, padding, other spellings).
 */
export function decodeCursor<Schema extends z.ZodType<object>>(
  token: string,
  schema: Schema,
  rejection: string,
): z.output<Schema> {
  // Node's base64url decoder skips characters it does not know instead of failing.
  if (!/^[A-Za-z0-9_-]+$/.test(token)) throw invalidArgument(rejection);
  let decoded: unknown;
  try {
    decoded = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
  } catch {
    throw invalidArgument(rejection);
  }
  const parsed = schema.safeParse(decoded);
  // Only the exact bytes we issue: no extra fields, no alternative encodings.
  if (!parsed.success || encodeCursor(parsed.data) !== token) throw invalidArgument(rejection);
  return parsed.data;
}
