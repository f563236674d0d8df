import type { JWK } from "jose";

/** The domain's view of persistence; src/store.ts implements it with drizzle. */
export interface AuthStore {
  /** Inserts the user; false when the email is taken (case-insensitively). */
  insertUser(user: UserRecord): Promise<boolean>;
  findUserByEmail(email: string): Promise<UserRecord | undefined>;
  findUserById(id: string): Promise<UserRecord | undefined>;
  /** Adds the roles the user lacks; the stored list stays sorted. Returns the new list. */
  addRoles(userId: string, roles: string[]): Promise<string[]>;
  updatePasswordHash(userId: string, passwordHash: string): Promise<void>;

  /** Starts a family with its first token, atomically. */
  startRefreshFamily(family: RefreshFamilyRecord, first: NewRefreshToken): Promise<void>;
  findRefreshToken(tokenHash: string): Promise<RefreshTokenRecord | undefined>;
  /**
   * Marks the token rotated and stores its successor, atomically, only if the token was not
   * rotated yet; false when another request rotated it first.
   */
  rotateRefreshToken(tokenHash: string, at: Date, successor: NewRefreshToken): Promise<boolean>;
  revokeRefreshFamily(familyId: string, at: Date): Promise<void>;

  /** Keys not retired, and keys retired after retiredAfter. */
  listSigningKeys(retiredAfter: Date): Promise<SigningKeyRecord[]>;
  /** Stores a new key and retires every other active key, atomically. */
  addSigningKeyRetiringOthers(key: SigningKeyRecord, at: Date): Promise<string[]>;
  addSigningKey(key: SigningKeyRecord): Promise<void>;
  /** Deletes keys retired before the cutoff (their private halves are no longer needed). */
  deleteSigningKeysRetiredBefore(cutoff: Date): Promise<number>;
  /** Every stored key, published or not. */
  listAllSigningKeys(): Promise<SigningKeyRecord[]>;
  /**
   * Stores a newly sealed private half (and clears a legacy clear one) if the row still holds
   * `expected`, the sealed value it was read with (null: the legacy clear JWK). False when
   * another replica got there first.
   */
  resealSigningKey(kid: string, expected: string | null, sealed: string): Promise<boolean>;

  /** The secret stored under name; the first caller's candidate wins a race. */
  ensureSecret(name: string, candidate: string, at: Date): Promise<string>;

  /**
   * Reads the account's throttle state under a row lock (concurrent attempts for the same
   * account wait for each other), stores the state `change` returns, if any, and returns its
   * result. State that expired before `at` reads as undefined.
   */
  updateLoginThrottle<T>(
    accountKey: string,
    at: Date,
    change: (state: LoginThrottleState | undefined) => { state?: LoginThrottleState; result: T },
  ): Promise<T>;
  clearLoginThrottle(accountKey: string): Promise<void>;
  deleteLoginThrottlesExpiredBefore(cutoff: Date): Promise<number>;
}

export interface LoginThrottleState {
  /** Attempts counted since the last success. */
  failures: number;
  lockedUntil: Date | null;
  lastAttemptAt: Date;
  expiresAt: Date;
}

export interface UserRecord {
  id: string;
  email: string;
  passwordHash: string;
  roles: string[];
  createdAt: Date;
}

export interface RefreshFamilyRecord {
  id: string;
  userId: string;
  createdAt: Date;
}

export interface NewRefreshToken {
  tokenHash: string;
  familyId: string;
  createdAt: Date;
  expiresAt: Date;
}

export interface RefreshTokenRecord extends NewRefreshToken {
  userId: string;
  rotatedAt: Date | null;
  familyRevokedAt: Date | null;
}

export interface SigningKeyRecord {
  kid: string;
  /** The private JWK sealed with the KEK (key-encryption.ts); null only in legacy rows. */
  sealedPrivateKey: string | null;
  /** Rows written before encryption at rest: the private JWK in clear, until sealed. */
  legacyPrivateJwk: JWK | null;
  publicJwk: JWK;
  createdAt: Date;
  retiredAt: Date | null;
}

/** The current time; injected so tests can move it. */
export type Clock = () => Date;
