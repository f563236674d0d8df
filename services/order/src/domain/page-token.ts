import { createHash } from "node:crypto";
import {
  decodeCursor,
  encodeCursor,
  invalidArgument,
  pageSizeOf as pageSizeWithin,
} from "@thinmesh/platform";
import { z } from "zod";
import { isUuid, type OrderCursor, type OrderScope } from "./order.js";

export const defaultPageSize = 20;
export const maxPageSize = 100;

/** The page size to use for a requested one: 0 means the default. */
export const pageSizeOf = (requested: number): number =>
  pageSizeWithin(requested, { default: defaultPageSize, max: maxPageSize });

/**
 * A short digest of whose orders a listing covers. A token carries it so that a token from
 * another user's (or an admin's) listing is refused rather than silently continuing a
 * different walk; the digest keeps the token small and the user id out of it.
 */
function scopeTag(scope: OrderScope): string {
  const name = scope === "all" ? "all" : `user:${scope.userId}`;
  return createHash("sha256").update(name).digest("base64url").slice(0, 16);
}

/** What a ListOrders page token holds: the scope tag, created_at and id, in that order. */
const orderCursor = z.object({ s: z.string(), c: z.string(), i: z.string() });

/**
 * A next_page_token: the last order of a page (created_at, id) and the listing's scope, as an
 * opaque cursor.
 */
export function encodePageToken(scope: OrderScope, last: OrderCursor): string {
  return encodeCursor({ s: scopeTag(scope), c: last.createdAt.toISOString(), i: last.id });
}

/** Where a page token continues; invalid_argument for anything this listing did not issue. */
export function decodePageToken(scope: OrderScope, token: string): OrderCursor {
  const notOurs =
    "page_token is not a token from a previous ListOrders response of yours; list again without it";
  const { s, c, i } = decodeCursor(token, orderCursor, notOurs);
  if (s !== scopeTag(scope)) {
    throw invalidArgument(
      "page_token belongs to a different listing (another user's, or one seen with other roles); list again without it",
    );
  }
  const createdAt = new Date(c);
  // Only the instants we issue, spelled as we spell them.
  if (Number.isNaN(createdAt.getTime()) || createdAt.toISOString() !== c || !isUuid(i)) {
    throw invalidArgument(notOurs);
  }
  return { createdAt, id: i };
}
