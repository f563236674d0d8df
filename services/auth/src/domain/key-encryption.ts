import { createCipheriv, createDecipheriv, createHash, createHmac, randomBytes } from "node:crypto";
import type { JWK } from "jose";

/**
 * Encryption at rest of the signing keys' private halves with a key-encryption key (KEK) that
 * lives outside the database (AUTH_KEY_ENCRYPTION_KEY, a Kubernetes Secret in a cluster): a
 * copy of the database alone no longer lets anyone sign tokens.
 *
 * AES-256-GCM with a random 96-bit IV per seal and the signing key's kid as additional
 * authenticated data, so a sealed private key copied onto another row does not open. A sealed
 * value names the KEK that sealed it by a fingerprint (an HMAC of a constant under the KEK,
 * which reveals nothing about the KEK), so the service can say which KEK a row needs and
 * re-seal rows sealed with the previous one.
 *
 *   v1.<kek fingerprint>.<iv>.<ciphertext>.<tag>      (base64url parts)
 */
export const sealFormat = "v1";

/** DEV-ONLY: used when no KEK is configured outside production. Public, so it protects nothing. */
export const devOnlyKeyEncryptionKey = createHash("sha256")
  .update("thinmesh DEV-ONLY key-encryption key: public, never protects real keys")
  .digest();

/** A KEK's fingerprint: safe to log and to store next to what it sealed. */
export function keyEncryptionKeyId(kek: Buffer): string {
  return createHmac("sha256", kek)
    .update("thinmesh key-encryption key id")
    .digest("hex")
    .slice(0, 16);
}

/** Why a sealed private key cannot be opened; the message says what to set. */
export class KeyDecryptionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "KeyDecryptionError";
  }
}

export interface KeyEncryptionOptions {
  /** 32 bytes: seals every new key and re-seals the previous KEK's. */
  current: Buffer;
  /** 32 bytes: another KEK rows may be sealed with (rotation); opens, never seals. */
  previous?: Buffer;
}

export type KeyEncryption = ReturnType<typeof createKeyEncryption>;

export function createKeyEncryption(options: KeyEncryptionOptions) {
  for (const [name, key] of Object.entries(options)) {
    if (key && key.length !== 32) throw new Error(`the ${name} KEK must be 32 bytes`);
  }
  const currentId = keyEncryptionKeyId(options.current);
  const previousId = options.previous && keyEncryptionKeyId(options.previous);
  const keysById = new Map([[currentId, options.current]]);
  if (options.previous && previousId) keysById.set(previousId, options.previous);

  const configured = () =>
    `AUTH_KEY_ENCRYPTION_KEY is ${currentId} and AUTH_KEY_ENCRYPTION_KEY_PREVIOUS ${previousId ? `is ${previousId}` : "is not set"}`;

  const parse = (sealed: string) => {
    const [format, kekId, iv, ciphertext, tag, ...rest] = sealed.split(".");
    if (format !== sealFormat || !kekId || !iv || !ciphertext || !tag || rest.length > 0) {
      return undefined;
    }
    const decode = (part: string) => Buffer.from(part, "base64url");
    return { kekId, iv: decode(iv), ciphertext: decode(ciphertext), tag: decode(tag) };
  };

  return {
    currentId,
    previousId,

    /** Encrypts a private JWK with the current KEK, bound to its kid. */
    seal(kid: string, privateJwk: JWK): string {
      const iv = randomBytes(12);
      const cipher = createCipheriv("aes-256-gcm", options.current, iv);
      cipher.setAAD(Buffer.from(kid));
      const ciphertext = Buffer.concat([
        cipher.update(JSON.stringify(privateJwk), "utf8"),
        cipher.final(),
      ]);
      return [sealFormat, currentId, iv, ciphertext, cipher.getAuthTag()]
        .map((part) => (typeof part === "string" ? part : part.toString("base64url")))
        .join(".");
    },

    /** The fingerprint of the KEK a sealed value needs; undefined when it is not one. */
    sealedWith(sealed: string): string | undefined {
      return parse(sealed)?.kekId;
    },

    /** Decrypts a sealed private JWK; throws KeyDecryptionError saying what is wrong. */
    open(kid: string, sealed: string): JWK {
      const parts = parse(sealed);
      if (!parts) {
        throw new KeyDecryptionError(
          `the private half of signing key ${kid} is not in the ${sealFormat} sealed format: the row was altered; rotate the signing keys`,
        );
      }
      const kek = keysById.get(parts.kekId);
      if (!kek) {
        throw new KeyDecryptionError(
          `signing key ${kid} is encrypted with key-encryption key ${parts.kekId}, but ${configured()}: set the KEK that encrypted it (as AUTH_KEY_ENCRYPTION_KEY_PREVIOUS while rotating KEKs), or rotate the signing keys if that KEK is lost`,
        );
      }
      try {
        const decipher = createDecipheriv("aes-256-gcm", kek, parts.iv);
        decipher.setAAD(Buffer.from(kid));
        decipher.setAuthTag(parts.tag);
        const clear = Buffer.concat([decipher.update(parts.ciphertext), decipher.final()]);
        return JSON.parse(clear.toString("utf8")) as JWK;
      } catch {
        throw new KeyDecryptionError(
          `signing key ${kid} does not decrypt with key-encryption key ${parts.kekId} although it names it: the row was altered or copied from another key; rotate the signing keys`,
        );
      }
    },
  };
}
