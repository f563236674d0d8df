import { decodeCursor, encodeCursor, pageSizeOf as pageSizeWithin } from "@thinmesh/platform";
import { z } from "zod";
import { skuPattern } from "./product.js";

export const defaultPageSize = 20;
export const maxPageSize = 100;

/** The page size to use for a requested one: 0 means the default. */
export const pageSizeOf = (requested: number): number =>
  pageSizeWithin(requested, { default: defaultPageSize, max: maxPageSize });

/** What a ListProducts page token holds: the last SKU of the page. */
const skuCursor = z.object({ after: z.string().regex(skuPattern) });

/** A next_page_token: the last SKU of a page, as an opaque cursor. */
export function encodePageToken(lastSku: string): string {
  return encodeCursor({ after: lastSku });
}

/** The SKU a page token continues after; invalid_argument for anything we did not issue. */
export function decodePageToken(token: string): string {
  return decodeCursor(
    token,
    skuCursor,
    "page_token is not a token from a previous ListProducts response",
  ).after;
}
