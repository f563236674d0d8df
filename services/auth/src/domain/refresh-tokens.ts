import { createHash, createHmac, randomBytes, randomUUID } from "node:crypto";
import { unauthenticated } from "@thinmesh/platform";
import type { AuthStore, Clock, RefreshTokenRecord } from "./ports.js";

/** A new opaque refresh token: 32 random bytes, base64url. */
export function newRefreshToken(): string {
  return randomBytes(32).toString("base64url");
}

/** What the database keeps instead of the token. */
export function hashRefreshToken(token: string): string {
  return createHash("sha256").update(token).digest("hex");
}

/**
 * The token that replaces a presented one. Deterministic, so that a retried Refresh (the mesh
 * retries POSTs) can be answered with the same successor without storing the token itself.
 */
export function successorOf(secret: Buffer, token: string): string {
  return createHmac("sha256", secret).update(token).digest("base64url");
}

export interface RefreshTokensOptions {
  store: AuthStore;
  now: Clock;
  ttlSeconds: number;
  /** How long after its rotation a token may be presented again and get the same successor. */
  retryGraceSeconds: number;
  /** Key material for successorOf, shared by every replica. */
  successorSecret: () => Promise<Buffer>;
}

export interface IssuedRefreshToken {
  token: string;
  expiresAt: Date;
}

export interface RotatedRefreshToken extends IssuedRefreshToken {
  userId: string;
}

export const refreshTokenMessages = {
  unknown: "refresh token is not valid; sign in again",
  revoked: "refresh token was revoked; sign in again",
  expired: "refresh token has expired; sign in again",
  reused: "refresh token was already used; sign in again",
} as const;

export type RefreshTokens = ReturnType<typeof createRefreshTokens>;

/**
 * Refresh tokens that rotate on every use. Each login starts a family; presenting a spent
 * token again means it leaked (or the client is confused), so the whole family is revoked —
 * except when it is a retry: within the grace window, while the successor is unused, the
 * same successor is handed out again.
 */
export function createRefreshTokens(options: RefreshTokensOptions) {
  const { store, now } = options;
  const expiry = (from: Date) => new Date(from.getTime() + options.ttlSeconds * 1000);

  async function replay(spent: RefreshTokenRecord, presented: string, at: Date) {
    const sinceRotation = at.getTime() - (spent.rotatedAt as Date).getTime();
    if (sinceRotation <= options.retryGraceSeconds * 1000) {
      const token = successorOf(await options.successorSecret(), presented);
      const next = await store.findRefreshToken(hashRefreshToken(token));
      const unused = next && !next.rotatedAt && !next.familyRevokedAt && next.expiresAt > at;
      if (unused) return { userId: spent.userId, token, expiresAt: next.expiresAt };
    }
    await store.revokeRefreshFamily(spent.familyId, at);
    throw unauthenticated(refreshTokenMessages.reused);
  }

  return {
    /** Starts a family (one per login) with its first token. */
    async start(userId: string): Promise<IssuedRefreshToken> {
      const at = now();
      const token = newRefreshToken();
      const familyId = randomUUID();
      const expiresAt = expiry(at);
      await store.startRefreshFamily(
        { id: familyId, userId, createdAt: at },
        { tokenHash: hashRefreshToken(token), familyId, createdAt: at, expiresAt },
      );
      return { token, expiresAt };
    },

    /** Spends the presented token and returns its successor; rejects with unauthenticated. */
    async rotate(presented: string): Promise<RotatedRefreshToken> {
      const tokenHash = hashRefreshToken(presented);
      // The second pass only happens when a concurrent request rotated the token between our
      // read and our conditional update; it then takes the replay path.
      for (let pass = 0; pass < 2; pass++) {
        const record = await store.findRefreshToken(tokenHash);
        const at = now();
        if (!record) break;
        if (record.familyRevokedAt) throw unauthenticated(refreshTokenMessages.revoked);
        if (record.expiresAt <= at) throw unauthenticated(refreshTokenMessages.expired);
        if (record.rotatedAt) return replay(record, presented, at);

        const token = successorOf(await options.successorSecret(), presented);
        const expiresAt = expiry(at);
        const rotated = await store.rotateRefreshToken(tokenHash, at, {
          tokenHash: hashRefreshToken(token),
          familyId: record.familyId,
          createdAt: at,
          expiresAt,
        });
        if (rotated) return { userId: record.userId, token, expiresAt };
      }
      throw unauthenticated(refreshTokenMessages.unknown);
    },
  };
}
