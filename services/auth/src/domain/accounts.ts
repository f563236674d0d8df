import { randomBytes, randomUUID } from "node:crypto";
import { alreadyExists, unauthenticated } from "@thinmesh/platform";
import type { AccessTokenIssuer } from "./access-tokens.js";
import type { LoginThrottle } from "./login-throttle.js";
import {
  defaultScryptParams,
  hashPassword,
  needsRehash,
  type ScryptParams,
  verifyPassword,
} from "./passwords.js";
import type { AuthStore, Clock, UserRecord } from "./ports.js";
import type { RefreshTokens } from "./refresh-tokens.js";

export interface User {
  id: string;
  email: string;
  roles: string[];
  createdAt: Date;
}

export interface IssuedTokens {
  accessToken: string;
  tokenType: "Bearer";
  expiresIn: number;
  refreshToken: string;
  refreshExpiresAt: Date;
}

export interface AccountsOptions {
  store: AuthStore;
  now: Clock;
  accessTokens: AccessTokenIssuer;
  refreshTokens: RefreshTokens;
  /** Per-account limit on failed sign-ins (login-throttle.ts). */
  throttle: LoginThrottle;
  scryptParams?: ScryptParams;
}

export const customerRoles = ["customer"];
export const adminRoles = ["admin", "customer"];

export const accountMessages = {
  emailTaken: "an account with this email already exists",
  badCredentials: "email or password is incorrect",
} as const;

const publicUser = ({ id, email, roles, createdAt }: UserRecord): User => ({
  id,
  email,
  roles,
  createdAt,
});

export type Accounts = ReturnType<typeof createAccounts>;

/** The use cases: register, login, refresh, and provisioning the administrator. */
export function createAccounts(options: AccountsOptions) {
  const { store, now, accessTokens, refreshTokens, throttle } = options;
  const scryptParams = options.scryptParams ?? defaultScryptParams;
  // Verified against when the email is unknown, so that both failures cost one scrypt.
  const dummyHash = hashPassword(randomBytes(24).toString("base64url"), scryptParams);

  async function createUser(email: string, password: string, roles: string[]) {
    const user: UserRecord = {
      id: randomUUID(),
      email,
      passwordHash: await hashPassword(password, scryptParams),
      roles,
      createdAt: now(),
    };
    return (await store.insertUser(user)) ? user : undefined;
  }

  async function tokensFor(user: UserRecord, refresh: { token: string; expiresAt: Date }) {
    const access = await accessTokens.issue(user);
    return {
      accessToken: access.token,
      tokenType: "Bearer",
      expiresIn: access.expiresIn,
      refreshToken: refresh.token,
      refreshExpiresAt: refresh.expiresAt,
    } satisfies IssuedTokens;
  }

  return {
    /**
     * Creates a customer account. Deliberately not idempotent: if the mesh retries a Register
     * whose first attempt committed but whose response was lost, the retry answers
     * already_exists, and the client signs in. Answering the retry with the account would mean
     * checking the password against the stored hash, i.e. a second Login path to keep as
     * careful as the first, for a rare case the client recovers from anyway.
     */
    async register(email: string, password: string): Promise<User> {
      const user = await createUser(email, password, customerRoles);
      if (!user) throw alreadyExists(accountMessages.emailTaken);
      return publicUser(user);
    },

    /**
     * Checks the password and starts a refresh token family. Rejects with LoginThrottled while
     * the email has failed too often, before looking the email up: a locked account and an
     * unknown email answer alike, and cost alike (no scrypt either way).
     */
    async login(email: string, password: string): Promise<{ user: User; tokens: IssuedTokens }> {
      const attempt = await throttle.begin(email);
      const user = await store.findUserByEmail(email);
      const matches = await verifyPassword(password, user?.passwordHash ?? (await dummyHash));
      // One message for both failures: the answer must not tell which emails have accounts.
      if (!user || !matches) throw unauthenticated(accountMessages.badCredentials);
      await throttle.succeeded(attempt);
      if (needsRehash(user.passwordHash, scryptParams)) {
        await store.updatePasswordHash(user.id, await hashPassword(password, scryptParams));
      }
      const tokens = await tokensFor(user, await refreshTokens.start(user.id));
      return { user: publicUser(user), tokens };
    },

    /** Rotates the refresh token and issues an access token with the user's current roles. */
    async refresh(refreshToken: string): Promise<IssuedTokens> {
      const rotated = await refreshTokens.rotate(refreshToken);
      const user = await store.findUserById(rotated.userId);
      if (!user) throw unauthenticated("the account no longer exists");
      return tokensFor(user, rotated);
    },

    /**
     * Makes sure the configured administrator exists with the admin role. An account that
     * already has the email is promoted only if ADMIN_PASSWORD is its password: otherwise
     * whoever registered that email first would become an administrator (refused: true).
     */
    async provisionAdmin(
      email: string,
      password: string,
    ): Promise<{ user: User; created: boolean; promoted: boolean; refused: boolean }> {
      const existing = await store.findUserByEmail(email);
      if (!existing) {
        const created = await createUser(email, password, adminRoles);
        if (created) {
          return { user: publicUser(created), created: true, promoted: false, refused: false };
        }
      }
      // Either it existed, or another replica created it a moment ago.
      const user = existing ?? (await store.findUserByEmail(email));
      if (!user) throw new Error(`cannot provision the administrator ${email}`);
      if (user.roles.includes("admin")) {
        return { user: publicUser(user), created: false, promoted: false, refused: false };
      }
      if (!(await verifyPassword(password, user.passwordHash))) {
        return { user: publicUser(user), created: false, promoted: false, refused: true };
      }
      const roles = await store.addRoles(user.id, ["admin"]);
      return {
        user: publicUser({ ...user, roles }),
        created: false,
        promoted: true,
        refused: false,
      };
    },
  };
}
