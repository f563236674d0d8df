import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AuthService } from "@thinmesh/contracts/shop/auth/v1/auth_pb.js";
import { ConfigError, createTokenVerifier, openDatabase } from "@thinmesh/platform";
import { createTestDatabase } from "@thinmesh/platform/testing";
import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { rotateKeys } from "../src/cli/rotate-keys-command.js";
import { signingKeys } from "../src/db/schema.js";
import { authDatabase } from "../src/service.js";
import { type AuthUnderTest, startAuth, uniqueEmail } from "./support.js";

const issuer = "https://auth.thinmesh.local";
const audience = "thinmesh";

describe("rotation while running", () => {
  let auth: AuthUnderTest;
  beforeAll(async () => {
    auth = await startAuth("auth_rotation");
  });
  afterAll(async () => {
    await auth?.stop();
  });

  const jwks = async () => {
    const response = await fetch(`${auth.service.url}/.well-known/jwks.json`);
    return ((await response.json()) as { keys: { kid: string }[] }).keys.map((key) => key.kid);
  };

  it("keeps old tokens verifying and signs new ones with the new key", async () => {
    const client = createClient(
      AuthService,
      createConnectTransport({ baseUrl: auth.service.url, httpVersion: "1.1" }),
    );
    const email = uniqueEmail("rotate");
    await client.register({ email, password: "rotation password" });
    const before = (await client.login({ email, password: "rotation password" })).tokens!;
    const oldKid = decodeProtectedHeader(before.accessToken).kid;
    expect(await jwks()).toEqual([oldKid]);

    const { kid: newKid, retired } = await auth.internals.keys.rotateSigningKey();
    expect(retired).toEqual([oldKid]);
    expect((await jwks()).sort()).toEqual([oldKid, newKid].sort());

    const after = (await client.login({ email, password: "rotation password" })).tokens!;
    expect(decodeProtectedHeader(after.accessToken).kid).toBe(newKid);
    const refreshed = (await client.refresh({ refreshToken: before.refreshToken })).tokens!;
    expect(decodeProtectedHeader(refreshed.accessToken).kid).toBe(newKid);

    // A verifier that first sees the JWKS now accepts tokens from before and after.
    const keys = createRemoteJWKSet(new URL(`${auth.service.url}/.well-known/jwks.json`));
    const options = { algorithms: ["ES256"], issuer, audience, requiredClaims: ["exp"] };
    for (const token of [before.accessToken, after.accessToken, refreshed.accessToken]) {
      await expect(jwtVerify(token, keys, options)).resolves.toBeDefined();
    }
    const verifier = createTokenVerifier({
      keys: new URL(`${auth.service.url}/.well-known/jwks.json`),
      issuer,
      audience,
    });
    await expect(verifier.verify(before.accessToken)).resolves.toBeDefined();
    await expect(verifier.verify(after.accessToken)).resolves.toBeDefined();
  });
});

describe("rotate-keys CLI", () => {
  it("rotates the keys of the configured database", async () => {
    const database = await createTestDatabase("auth_cli");
    const dataDir = database.url ? undefined : await mkdtemp(join(tmpdir(), "auth-cli-"));
    const env = database.url ? { DATABASE_URL: database.url } : { PGLITE_DATA_DIR: dataDir! };
    try {
      const first = await rotateKeys(env);
      expect(first.retired).toEqual([]);
      const second = await rotateKeys(env);
      expect(second.kid).not.toBe(first.kid);
      expect(second.retired).toEqual([first.kid]);

      const opened = await openDatabase({ url: database.url, dataDir, ...authDatabase });
      try {
        const rows = await opened.db.select().from(signingKeys);
        const retiredAt = new Map(rows.map((row) => [row.kid, row.retiredAt]));
        expect(retiredAt.get(first.kid)).toBeInstanceOf(Date);
        expect(retiredAt.get(second.kid)).toBeNull();
      } finally {
        await opened.close();
      }
    } finally {
      await database.drop();
      if (dataDir) await rm(dataDir, { recursive: true, force: true });
    }
  });

  it("refuses to rotate with a KEK that does not open the stored keys, adding no key", async () => {
    const database = await createTestDatabase("auth_cli_kek");
    const dataDir = database.url ? undefined : await mkdtemp(join(tmpdir(), "auth-cli-"));
    const env = database.url ? { DATABASE_URL: database.url } : { PGLITE_DATA_DIR: dataDir! };
    const kek = (byte: number) => Buffer.alloc(32, byte).toString("base64");
    try {
      const first = await rotateKeys({ ...env, AUTH_KEY_ENCRYPTION_KEY: kek(1) });
      const error = await rotateKeys({ ...env, AUTH_KEY_ENCRYPTION_KEY: kek(2) }).catch(
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(ConfigError);
      expect((error as ConfigError).message).toMatch(
        new RegExp(`signing key ${first.kid} is encrypted with key-encryption key`),
      );
      const again = await rotateKeys({ ...env, AUTH_KEY_ENCRYPTION_KEY: kek(1) });
      expect(again.retired).toEqual([first.kid]);
    } finally {
      await database.drop();
      if (dataDir) await rm(dataDir, { recursive: true, force: true });
    }
  });

  it("refuses to run without a database to rotate, naming the variable", async () => {
    const error = await rotateKeys({}).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).message).toMatch(/DATABASE_URL/);
  });
});
