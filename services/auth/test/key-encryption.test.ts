import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AuthService } from "@thinmesh/contracts/shop/auth/v1/auth_pb.js";
import { ConfigError, type RunningService, startService } from "@thinmesh/platform";
import { createTestDatabase, type TestDatabase, testEnv } from "@thinmesh/platform/testing";
import { eq } from "drizzle-orm";
import { decodeProtectedHeader, exportJWK, generateKeyPair } from "jose";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { signingKeys } from "../src/db/schema.js";
import {
  createKeyEncryption,
  KeyDecryptionError,
  keyEncryptionKeyId,
} from "../src/domain/key-encryption.js";
import { authService } from "../src/service.js";
import { uniqueEmail } from "./support.js";

const kekA = randomBytes(32);
const kekB = randomBytes(32);
const base64 = (key: Buffer) => key.toString("base64");

async function privateJwk() {
  const { privateKey } = await generateKeyPair("ES256", { extractable: true });
  return exportJWK(privateKey);
}

describe("sealing a private key", () => {
  it("round-trips, and the sealed text holds nothing of the key", async () => {
    const jwk = await privateJwk();
    const encryption = createKeyEncryption({ current: kekA });
    const sealed = encryption.seal("kid-1", jwk);
    expect(sealed).toMatch(
      new RegExp(`^v1\\.${keyEncryptionKeyId(kekA)}\\.[\\w-]+\\.[\\w-]+\\.[\\w-]+$`),
    );
    expect(sealed).not.toContain(jwk.d);
    expect(encryption.open("kid-1", sealed)).toEqual(jwk);
    // A fresh IV each time: the same key never seals to the same text.
    expect(encryption.seal("kid-1", jwk)).not.toBe(sealed);
  });

  it("refuses a sealed key moved to another kid, or altered", async () => {
    const encryption = createKeyEncryption({ current: kekA });
    const sealed = encryption.seal("kid-1", await privateJwk());
    expect(() => encryption.open("kid-2", sealed)).toThrow(
      /signing key kid-2 does not decrypt with key-encryption key \w+ although it names it/,
    );
    const parts = sealed.split(".");
    parts[3] = Buffer.from("tampered").toString("base64url");
    expect(() => encryption.open("kid-1", parts.join("."))).toThrow(KeyDecryptionError);
    expect(() => encryption.open("kid-1", "{}")).toThrow(/not in the v1 sealed format/);
  });

  it("says which KEK a key needs when the configured ones do not open it", async () => {
    const sealed = createKeyEncryption({ current: kekA }).seal("kid-1", await privateJwk());
    const other = createKeyEncryption({ current: kekB });
    expect(() => other.open("kid-1", sealed)).toThrow(
      `signing key kid-1 is encrypted with key-encryption key ${keyEncryptionKeyId(kekA)}, but AUTH_KEY_ENCRYPTION_KEY is ${keyEncryptionKeyId(kekB)} and AUTH_KEY_ENCRYPTION_KEY_PREVIOUS is not set`,
    );
    // With the KEK it needs as the previous one, it opens.
    expect(createKeyEncryption({ current: kekB, previous: kekA }).open("kid-1", sealed)).toEqual(
      expect.objectContaining({ kty: "EC", crv: "P-256" }),
    );
  });
});

describe("the auth database's signing keys", () => {
  let database: TestDatabase;
  let dataDir: string | undefined;
  let running: RunningService | undefined;

  beforeEach(async () => {
    database = await createTestDatabase("auth_kek");
    dataDir = database.url ? undefined : await mkdtemp(join(tmpdir(), "auth-kek-"));
  });
  afterEach(async () => {
    await running?.stop();
    running = undefined;
    await database.drop();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  /** Starts auth on this test's database (kept across restarts); resolves once ready. */
  async function start(env: Record<string, string>) {
    await running?.stop();
    running = undefined;
    const service = await startService(
      authService,
      testEnv(database, { ...env, ...(dataDir ? { PGLITE_DATA_DIR: dataDir } : {}) }),
    );
    try {
      await service.ready;
    } catch (error) {
      await service.stop();
      throw error;
    }
    running = service;
    return service;
  }

  // Every column of every row, as stored.
  const rows = () => running!.database.db.select().from(signingKeys).orderBy(signingKeys.createdAt);

  /** The kid a fresh login's access token is signed with. */
  async function loginKid(service: RunningService) {
    const client = createClient(
      AuthService,
      createConnectTransport({ baseUrl: service.url, httpVersion: "1.1" }),
    );
    const email = uniqueEmail("kek");
    await client.register({ email, password: "kek test password" });
    const { tokens } = await client.login({ email, password: "kek test password" });
    return decodeProtectedHeader(tokens!.accessToken).kid;
  }

  it("stores the private half only sealed with the KEK, never in clear", async () => {
    const service = await start({ AUTH_KEY_ENCRYPTION_KEY: base64(kekA) });
    const kid = await loginKid(service);
    const [row] = await rows();
    expect(row).toMatchObject({ kid, legacyPrivateJwk: null });
    const sealed = row!.sealedPrivateKey!;
    expect(sealed.startsWith(`v1.${keyEncryptionKeyId(kekA)}.`)).toBe(true);
    const { d } = createKeyEncryption({ current: kekA }).open(kid!, sealed);
    expect(d).toMatch(/^[\w-]{43}$/);
    expect(JSON.stringify(row)).not.toContain(d);
  });

  it("seals a key stored in clear before encryption at rest, and keeps signing with it", async () => {
    await start({ AUTH_KEY_ENCRYPTION_KEY: base64(kekA) });
    const [created] = await rows();
    const kid = created!.kid;
    const clear = createKeyEncryption({ current: kekA }).open(kid, created!.sealedPrivateKey!);
    // The row as the previous version wrote it.
    await running!.database.db
      .update(signingKeys)
      .set({ sealedPrivateKey: null, legacyPrivateJwk: clear })
      .where(eq(signingKeys.kid, kid));

    const service = await start({ AUTH_KEY_ENCRYPTION_KEY: base64(kekA) });
    const [row] = await rows();
    expect(row).toMatchObject({ kid, legacyPrivateJwk: null });
    expect(JSON.stringify(row)).not.toContain(clear.d);
    expect(await loginKid(service)).toBe(kid);
  });

  it("refuses to start with a KEK that did not encrypt the keys, saying which one they need", async () => {
    await start({ AUTH_KEY_ENCRYPTION_KEY: base64(kekA) });
    const error = await start({ AUTH_KEY_ENCRYPTION_KEY: base64(kekB) }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).message).toMatch(
      new RegExp(
        `AUTH_KEY_ENCRYPTION_KEY: signing key \\S+ is encrypted with key-encryption key ${keyEncryptionKeyId(kekA)}, but AUTH_KEY_ENCRYPTION_KEY is ${keyEncryptionKeyId(kekB)} and AUTH_KEY_ENCRYPTION_KEY_PREVIOUS is not set: set the KEK that encrypted it`,
      ),
    );
  });

  it("rotates the KEK: the previous one still opens the keys, which are re-sealed with the new one", async () => {
    const first = await start({ AUTH_KEY_ENCRYPTION_KEY: base64(kekA) });
    const kid = await loginKid(first);

    const rotating = await start({
      AUTH_KEY_ENCRYPTION_KEY: base64(kekB),
      AUTH_KEY_ENCRYPTION_KEY_PREVIOUS: base64(kekA),
    });
    expect(await loginKid(rotating)).toBe(kid);
    const [row] = await rows();
    expect(row!.sealedPrivateKey!.startsWith(`v1.${keyEncryptionKeyId(kekB)}.`)).toBe(true);

    // Once re-sealed, the previous KEK is no longer needed, and no longer enough.
    const after = await start({ AUTH_KEY_ENCRYPTION_KEY: base64(kekB) });
    expect(await loginKid(after)).toBe(kid);
    await expect(start({ AUTH_KEY_ENCRYPTION_KEY: base64(kekA) })).rejects.toThrow(
      /encrypted with key-encryption key/,
    );
  });
});
