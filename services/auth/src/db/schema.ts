import { sql } from "drizzle-orm";
import {
  check,
  index,
  integer,
  jsonb,
  pgTable,
  text,
  timestamp,
  uniqueIndex,
  uuid,
} from "drizzle-orm/pg-core";
import type { JWK } from "jose";

const instant = (name: string) => timestamp(name, { withTimezone: true, mode: "date" });

export const users = pgTable(
  "users",
  {
    id: uuid("id").primaryKey(),
    /** As the user typed it; compared case-insensitively. */
    email: text("email").notNull(),
    /** scrypt$N$r$p$salt$hash */
    passwordHash: text("password_hash").notNull(),
    roles: text("roles").array().notNull(),
    createdAt: instant("created_at").notNull(),
  },
  // Uniqueness regardless of case is the database's job: two concurrent registrations of
  // "A@x" and "a@x" cannot both pass a check done in code.
  (table) => [uniqueIndex("users_email_lower_key").on(sql`lower(${table.email})`)],
);

/** One login: every refresh token rotated from it belongs to the same family. */
export const refreshTokenFamilies = pgTable("refresh_token_families", {
  id: uuid("id").primaryKey(),
  userId: uuid("user_id")
    .notNull()
    .references(() => users.id, { onDelete: "cascade" }),
  createdAt: instant("created_at").notNull(),
  /** Set once on reuse; one row, so a rotation racing the revocation cannot escape it. */
  revokedAt: instant("revoked_at"),
});

export const refreshTokens = pgTable(
  "refresh_tokens",
  {
    /** SHA-256 of the token (hex); the token itself is never stored. */
    tokenHash: text("token_hash").primaryKey(),
    familyId: uuid("family_id")
      .notNull()
      .references(() => refreshTokenFamilies.id, { onDelete: "cascade" }),
    createdAt: instant("created_at").notNull(),
    expiresAt: instant("expires_at").notNull(),
    rotatedAt: instant("rotated_at"),
  },
  (table) => [index("refresh_tokens_family_id_idx").on(table.familyId)],
);

/**
 * ES256 key pairs. The private JWK is stored encrypted with the key-encryption key from the
 * environment (src/domain/key-encryption.ts), never in clear.
 */
export const signingKeys = pgTable(
  "signing_keys",
  {
    kid: text("kid").primaryKey(),
    /** v1.<kek fingerprint>.<iv>.<ciphertext>.<tag>: the private JWK, AES-256-GCM, kid as AAD. */
    sealedPrivateKey: text("sealed_private_key"),
    /**
     * The private JWK in clear, as rows written before encryption at rest have it. The service
     * seals such rows when it starts and empties this column; nothing writes it any more.
     */
    legacyPrivateJwk: jsonb("private_jwk").$type<JWK>(),
    publicJwk: jsonb("public_jwk").$type<JWK>().notNull(),
    createdAt: instant("created_at").notNull(),
    retiredAt: instant("retired_at"),
  },
  (table) => [
    check(
      "signing_keys_one_private_half",
      sql`(${table.sealedPrivateKey} is null) <> (${table.legacyPrivateJwk} is null)`,
    ),
  ],
);

/** Random key material created on first start and shared by every replica. */
export const secrets = pgTable("secrets", {
  name: text("name").primaryKey(),
  /** base64url */
  value: text("value").notNull(),
  createdAt: instant("created_at").notNull(),
});

/**
 * Failed sign-ins per account (src/domain/login-throttle.ts has the rule). Keyed by a hash of
 * the normalised email, whether or not an account has it, so that unknown emails are
 * throttled alike and the table holds no email addresses. In the database, not in memory, so
 * that every replica sees the same count.
 */
export const loginThrottles = pgTable(
  "login_throttles",
  {
    /** SHA-256 (hex) of the normalised email. */
    accountKey: text("account_key").primaryKey(),
    /** Attempts since the last success (or since the failures were forgotten). */
    failures: integer("failures").notNull(),
    lockedUntil: instant("locked_until"),
    lastAttemptAt: instant("last_attempt_at").notNull(),
    /** After this the row means nothing and is pruned. */
    expiresAt: instant("expires_at").notNull(),
  },
  (table) => [index("login_throttles_expires_at_idx").on(table.expiresAt)],
);

export const schema = {
  users,
  refreshTokenFamilies,
  refreshTokens,
  signingKeys,
  secrets,
  loginThrottles,
};
export type AuthSchema = typeof schema;
