import { createHash } from "node:crypto";
import { invalidArgument } from "@thinmesh/platform";
import { isUuid, type OrderCursor, type OrderScope } from "./order.js";

export const defaultPageSize = 20;
export const maxPageSize = 100;

/** The page size to use for a requested one: 0 means the default. */
export function pageSizeOf(requested: number): number {
  if (requested === 0) return defaultPageSize;
  if (!Number.isInteger(requested) || requested < 0 || requested > maxPageSize) {
    throw invalidArgument(`page_size must be between 0 and ${maxPageSize}, got ${requested}`);
  }
  return requested;
}

/**
 * A short digest of whose orders a listing covers. A token carries it so that a token from
 * another user's (or an admin's) listing is refused rather than silently continuing a
 * different walk; the digest keeps the token small and the user id out of it.
 */
function scopeTag(scope: OrderScope): string {
  const name = scope === "all" ? "all" : `user:${scope.userId}`;
  return createHash("sha256").update(name).digest("base64url").slice(0, 16);
}

/**
 * A next_page_token: the last order of a page (created_at, id) and the listing's scope,
 * base64url of a small JSON object so that clients treat it as opaque.
 */
export function encodePageToken(scope: OrderScope, last: OrderCursor): string {
  const body = { s: scopeTag(scope), c: last.createdAt.toISOString(), i: last.id };
  return Buffer.from(JSON.stringify(body)).toString("base64url");
}

/** Where a page token continues; invalid_argument for anything this listing did not issue. */
export function decodePageToken(scope: OrderScope, token: string): OrderCursor {
  const rejected = invalidArgument(
    "page_token is not a token from a previous ListOrders response of yours; list again without it",
  );
  // Node's base64url decoder skips characters it does not know instead of failing.
  if (!/^[A-Za-z0-9_-]+$/.test(token)) throw rejected;
  let decoded: unknown;
  try {
    decoded = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
  } catch {
    throw rejected;
  }
  const { s, c, i } = (decoded ?? {}) as { s?: unknown; c?: unknown; i?: unknown };
  if (typeof s !== "string" || typeof c !== "string" || typeof i !== "string") throw rejected;
  if (s !== scopeTag(scope)) {
    throw invalidArgument(
      "page_token belongs to a different listing (another user's, or one seen with other roles); list again without it",
    );
  }
  const createdAt = new Date(c);
  if (Number.isNaN(createdAt.getTime()) || !isUuid(i)) throw rejected;
  const cursor = { createdAt, id: i };
  // Only the exact bytes we issue: no extra fields, no alternative encodings.
  if (encodePageToken(scope, cursor) !== token) throw rejected;
  return cursor;
}
