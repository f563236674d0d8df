import { ConfigError, unavailable } from "@thinmesh/platform";
import {
  type CryptoKey,
  calculateJwkThumbprint,
  exportJWK,
  generateKeyPair,
  importJWK,
  type JWK,
} from "jose";
import { KeyDecryptionError, type KeyEncryption } from "./key-encryption.js";
import type { AuthStore, Clock, SigningKeyRecord } from "./ports.js";

export const signingAlgorithm = "ES256";

/** A private key ready to sign with, and the kid its tokens carry. */
export interface SigningKey {
  kid: string;
  privateKey: CryptoKey;
}

export interface SigningKeysOptions {
  store: AuthStore;
  now: Clock;
  /** Lifetime of the tokens these keys sign. */
  accessTokenTtlSeconds: number;
  /** How long the current key is reused before the store is asked again (other replicas rotate). */
  cacheSeconds: number;
  /** Allowance for verifiers whose clocks run behind. */
  clockSkewSeconds?: number;
  /** Seals the private halves in the store with the KEK, and opens them. */
  keyEncryption: KeyEncryption;
}

/**
 * How long a retired key stays in the JWKS. A token signed with it just before retirement is
 * valid for the access-token TTL; another replica may keep signing with it until its cache
 * expires; verifiers may accept a token a little after exp (clock skew).
 */
export function publicationWindowMs(options: SigningKeysOptions): number {
  const seconds =
    options.accessTokenTtlSeconds + options.cacheSeconds + (options.clockSkewSeconds ?? 60);
  return seconds * 1000;
}

/**
 * A fresh ES256 key pair, its private half sealed with the KEK; its kid is the RFC 7638
 * thumbprint of the public key.
 */
export async function generateSigningKey(
  createdAt: Date,
  keyEncryption: KeyEncryption,
): Promise<SigningKeyRecord> {
  const { privateKey, publicKey } = await generateKeyPair(signingAlgorithm, { extractable: true });
  const publicJwk = await exportJWK(publicKey);
  const kid = await calculateJwkThumbprint(publicJwk);
  const published = { ...publicJwk, kid, alg: signingAlgorithm, use: "sig" };
  const privateJwk = { ...(await exportJWK(privateKey)), kid, alg: signingAlgorithm };
  return {
    kid,
    sealedPrivateKey: keyEncryption.seal(kid, privateJwk),
    legacyPrivateJwk: null,
    publicJwk: published,
    createdAt,
    retiredAt: null,
  };
}

/** The key to sign with: the newest active one (two replicas may each have created one). */
function newestActive(keys: SigningKeyRecord[]): SigningKeyRecord | undefined {
  return keys
    .filter((key) => key.retiredAt === null)
    .sort((a, b) => b.createdAt.getTime() - a.createdAt.getTime() || b.kid.localeCompare(a.kid))[0];
}

export type SigningKeys = ReturnType<typeof createSigningKeys>;

/** The signing keys: which one signs, which ones are published, and rotation. */
export function createSigningKeys(options: SigningKeysOptions) {
  const { store, now, keyEncryption } = options;
  let cached: { key: Promise<SigningKey>; until: number } | undefined;

  const publishedRecords = () =>
    store.listSigningKeys(new Date(now().getTime() - publicationWindowMs(options)));

  async function loadCurrent(): Promise<SigningKey> {
    const newest = newestActive(await publishedRecords());
    if (!newest)
      throw unavailable("no signing key exists yet; the auth service creates one at start");
    let privateJwk: JWK;
    try {
      privateJwk = privateHalf(newest);
    } catch (error) {
      if (!(error instanceof KeyDecryptionError)) throw error;
      throw unavailable(`cannot sign tokens: ${error.message}`);
    }
    const privateKey = await importJWK(privateJwk, signingAlgorithm);
    return { kid: newest.kid, privateKey: privateKey as CryptoKey };
  }

  // A legacy clear row is still usable (another replica of an older version may have just
  // written it during a rollout); the next start seals it.
  const privateHalf = (key: SigningKeyRecord): JWK =>
    key.sealedPrivateKey !== null
      ? keyEncryption.open(key.kid, key.sealedPrivateKey)
      : (key.legacyPrivateJwk as JWK);

  return {
    /**
     * Run at start, before any key is used: seals private halves stored in clear (rows from
     * before encryption at rest) and re-seals those sealed with the previous KEK, so that the
     * previous KEK can be dropped. Opening every key also checks the configured KEKs: a key
     * none of them opens stops the start with a ConfigError saying which KEK it needs.
     */
    async sealStoredKeys(): Promise<{ sealed: number; resealed: number }> {
      const counts = { sealed: 0, resealed: 0 };
      for (const key of await store.listAllSigningKeys()) {
        let privateJwk: JWK;
        try {
          privateJwk = privateHalf(key);
        } catch (error) {
          if (!(error instanceof KeyDecryptionError)) throw error;
          throw new ConfigError([`AUTH_KEY_ENCRYPTION_KEY: ${error.message}`]);
        }
        const sealedWith = key.sealedPrivateKey && keyEncryption.sealedWith(key.sealedPrivateKey);
        if (sealedWith === keyEncryption.currentId) continue;
        const resealed = keyEncryption.seal(key.kid, privateJwk);
        if (await store.resealSigningKey(key.kid, key.sealedPrivateKey, resealed)) {
          counts[key.sealedPrivateKey === null ? "sealed" : "resealed"]++;
        }
      }
      cached = undefined;
      return counts;
    },

    /** Creates a key when none is active (first start). Returns the current key's kid. */
    async ensureSigningKey(): Promise<string> {
      const existing = newestActive(await publishedRecords());
      if (existing) return existing.kid;
      // Two replicas starting at once may both get here: both keys are published and the
      // newest signs, so nothing breaks.
      const key = await generateSigningKey(now(), keyEncryption);
      await store.addSigningKey(key);
      cached = undefined;
      return key.kid;
    },

    /**
     * Creates a new key and retires the active ones. Retired keys stay published for the
     * publication window so that tokens signed before the rotation keep verifying; keys past
     * it are deleted.
     */
    async rotateSigningKey(): Promise<{ kid: string; retired: string[]; deleted: number }> {
      const at = now();
      const key = await generateSigningKey(at, keyEncryption);
      const retired = await store.addSigningKeyRetiringOthers(key, at);
      const deleted = await store.deleteSigningKeysRetiredBefore(
        new Date(at.getTime() - publicationWindowMs(options)),
      );
      cached = undefined;
      return { kid: key.kid, retired, deleted };
    },

    /** The key to sign with, cached for cacheSeconds. */
    currentSigningKey(): Promise<SigningKey> {
      const at = now().getTime();
      if (!cached || at >= cached.until) {
        const key = loadCurrent();
        cached = { key, until: at + options.cacheSeconds * 1000 };
        key.catch(() => {
          if (cached?.key === key) cached = undefined; // do not cache a failure
        });
      }
      return cached.key;
    },

    /** Public JWKs of the active keys and of retired keys still inside the window. */
    async publishedKeys(): Promise<JWK[]> {
      return (await publishedRecords()).map((key) => key.publicJwk);
    },
  };
}
