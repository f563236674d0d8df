import { type AppDatabase, isUniqueViolation } from "@thinmesh/platform";
import { and, desc, eq, gt, isNotNull, isNull, lt, or, sql } from "drizzle-orm";
import {
  type AuthSchema,
  loginThrottles,
  refreshTokenFamilies,
  refreshTokens,
  secrets,
  signingKeys,
  users,
} from "./db/schema.js";
import type { AuthStore } from "./domain/ports.js";

/** The domain's persistence over drizzle (Postgres or PGlite). */
export function createAuthStore(db: AppDatabase<AuthSchema>): AuthStore {
  const byEmail = (email: string) => eq(sql`lower(${users.email})`, sql`lower(${email})`);

  return {
    async insertUser(user) {
      try {
        await db.insert(users).values(user);
        return true;
      } catch (error) {
        if (isUniqueViolation(error, "users_email_lower_key")) return false;
        throw error;
      }
    },

    async findUserByEmail(email) {
      const [user] = await db.select().from(users).where(byEmail(email));
      return user;
    },

    async findUserById(id) {
      const [user] = await db.select().from(users).where(eq(users.id, id));
      return user;
    },

    async addRoles(userId, roles) {
      const added = sql`array[${sql.join(
        roles.map((role) => sql`${role}`),
        sql`, `,
      )}]::text[]`;
      const [row] = await db
        .update(users)
        .set({
          roles: sql`(select array_agg(distinct r order by r) from unnest(${users.roles} || ${added}) as r)`,
        })
        .where(eq(users.id, userId))
        .returning({ roles: users.roles });
      if (!row) throw new Error(`no user ${userId}`);
      return row.roles;
    },

    async updatePasswordHash(userId, passwordHash) {
      await db.update(users).set({ passwordHash }).where(eq(users.id, userId));
    },

    async startRefreshFamily(family, first) {
      await db.transaction(async (tx) => {
        await tx.insert(refreshTokenFamilies).values(family);
        await tx.insert(refreshTokens).values(first);
      });
    },

    async findRefreshToken(tokenHash) {
      const [row] = await db
        .select({
          tokenHash: refreshTokens.tokenHash,
          familyId: refreshTokens.familyId,
          createdAt: refreshTokens.createdAt,
          expiresAt: refreshTokens.expiresAt,
          rotatedAt: refreshTokens.rotatedAt,
          userId: refreshTokenFamilies.userId,
          familyRevokedAt: refreshTokenFamilies.revokedAt,
        })
        .from(refreshTokens)
        .innerJoin(refreshTokenFamilies, eq(refreshTokens.familyId, refreshTokenFamilies.id))
        .where(eq(refreshTokens.tokenHash, tokenHash));
      return row;
    },

    rotateRefreshToken(tokenHash, at, successor) {
      return db.transaction(async (tx) => {
        // Conditional: of two requests presenting the same token at once, one wins here; the
        // other sees it rotated (Postgres re-checks the WHERE after the winner commits).
        const spent = await tx
          .update(refreshTokens)
          .set({ rotatedAt: at })
          .where(and(eq(refreshTokens.tokenHash, tokenHash), isNull(refreshTokens.rotatedAt)))
          .returning({ tokenHash: refreshTokens.tokenHash });
        if (spent.length === 0) return false;
        await tx.insert(refreshTokens).values(successor);
        return true;
      });
    },

    async revokeRefreshFamily(familyId, at) {
      await db
        .update(refreshTokenFamilies)
        .set({ revokedAt: at })
        .where(and(eq(refreshTokenFamilies.id, familyId), isNull(refreshTokenFamilies.revokedAt)));
    },

    listSigningKeys(retiredAfter) {
      return db
        .select()
        .from(signingKeys)
        .where(or(isNull(signingKeys.retiredAt), gt(signingKeys.retiredAt, retiredAfter)))
        .orderBy(desc(signingKeys.createdAt), desc(signingKeys.kid));
    },

    async addSigningKey(key) {
      await db.insert(signingKeys).values(key);
    },

    addSigningKeyRetiringOthers(key, at) {
      return db.transaction(async (tx) => {
        const retired = await tx
          .update(signingKeys)
          .set({ retiredAt: at })
          .where(isNull(signingKeys.retiredAt))
          .returning({ kid: signingKeys.kid });
        await tx.insert(signingKeys).values(key);
        return retired.map((row) => row.kid);
      });
    },

    async deleteSigningKeysRetiredBefore(cutoff) {
      const deleted = await db
        .delete(signingKeys)
        .where(and(isNotNull(signingKeys.retiredAt), lt(signingKeys.retiredAt, cutoff)))
        .returning({ kid: signingKeys.kid });
      return deleted.length;
    },

    listAllSigningKeys() {
      return db.select().from(signingKeys).orderBy(signingKeys.createdAt);
    },

    async resealSigningKey(kid, expected, sealed) {
      const resealed = await db
        .update(signingKeys)
        .set({ sealedPrivateKey: sealed, legacyPrivateJwk: null })
        .where(
          and(
            eq(signingKeys.kid, kid),
            expected === null
              ? isNotNull(signingKeys.legacyPrivateJwk)
              : eq(signingKeys.sealedPrivateKey, expected),
          ),
        )
        .returning({ kid: signingKeys.kid });
      return resealed.length > 0;
    },

    async ensureSecret(name, candidate, at) {
      await db
        .insert(secrets)
        .values({ name, value: candidate, createdAt: at })
        .onConflictDoNothing();
      const [row] = await db.select().from(secrets).where(eq(secrets.name, name));
      if (!row) throw new Error(`secret ${name} vanished`);
      return row.value;
    },

    updateLoginThrottle(accountKey, at, change) {
      return db.transaction(async (tx) => {
        // A row to lock even for a first attempt: SELECT … FOR UPDATE locks nothing that does
        // not exist, and two first attempts would both read "no state". The placeholder is
        // already expired, so it reads as no state.
        await tx
          .insert(loginThrottles)
          .values({ accountKey, failures: 0, lastAttemptAt: at, expiresAt: at })
          .onConflictDoNothing();
        const [row] = await tx
          .select()
          .from(loginThrottles)
          .where(eq(loginThrottles.accountKey, accountKey))
          .for("update");
        const current = row && row.expiresAt > at ? row : undefined;
        const { state, result } = change(
          current && {
            failures: current.failures,
            lockedUntil: current.lockedUntil,
            lastAttemptAt: current.lastAttemptAt,
            expiresAt: current.expiresAt,
          },
        );
        if (state) {
          await tx
            .update(loginThrottles)
            .set(state)
            .where(eq(loginThrottles.accountKey, accountKey));
        }
        return result;
      });
    },

    async clearLoginThrottle(accountKey) {
      await db.delete(loginThrottles).where(eq(loginThrottles.accountKey, accountKey));
    },

    async deleteLoginThrottlesExpiredBefore(cutoff) {
      const deleted = await db
        .delete(loginThrottles)
        .where(lt(loginThrottles.expiresAt, cutoff))
        .returning({ accountKey: loginThrottles.accountKey });
      return deleted.length;
    },
  };
}
