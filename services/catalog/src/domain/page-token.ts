import { invalidArgument } from "@thinmesh/platform";
import { skuPattern } from "./product.js";

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
 * A next_page_token: the last SKU of a page, wrapped so that clients treat it as opaque
 * (base64url of a small JSON object, which leaves room to change what it holds).
 */
export function encodePageToken(lastSku: string): string {
  return Buffer.from(JSON.stringify({ after: lastSku })).toString("base64url");
}

/** The SKU a page token continues after; invalid_argument for anything we did not issue. */
export function decodePageToken(token: string): string {
  const rejected = invalidArgument(
    "page_token is not a token from a previous ListProducts response",
  );
  // Node's base64url decoder skips characters it does not know instead of failing.
  if (!/^[A-Za-z0-9_-]+$/.test(token)) throw rejected;
  let decoded: unknown;
  try {
    decoded = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
  } catch {
    throw rejected;
  }
  const after = (decoded as { after?: unknown } | null)?.after;
  if (typeof after !== "string" || !skuPattern.test(after)) throw rejected;
  // Only the exact bytes we issue: no extra fields, no alternative encodings.
  if (encodePageToken(after) !== token) throw rejected;
  return after;
}
