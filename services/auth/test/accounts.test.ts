import { DomainError } from "@thinmesh/platform";
import { decodeJwt } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createAccessTokenIssuer } from "../src/domain/access-tokens.js";
import { accountMessages, createAccounts } from "../src/domain/accounts.js";
import { createLoginThrottle, defaultLoginThrottlePolicy } from "../src/domain/login-throttle.js";
import { parsePasswordHash, type ScryptParams, verifyPassword } from "../src/domain/passwords.js";
import { createRefreshTokens } from "../src/domain/refresh-tokens.js";
import { createSigningKeys } from "../src/domain/signing-keys.js";
import { manualClock, openTestStore, testKeyEncryption, uniqueEmail } from "./support.js";

let testStore: Awaited<ReturnType<typeof openTestStore>>;

beforeAll(async () => {
  testStore = await openTestStore("auth_accounts");
});
afterAll(async () => {
  await testStore?.close();
});

function accounts(scryptParams?: ScryptParams) {
  const { store } = testStore;
  const { now } = manualClock();
  const keys = createSigningKeys({
    store,
    now,
    accessTokenTtlSeconds: 900,
    cacheSeconds: 30,
    keyEncryption: testKeyEncryption,
  });
  const refreshTokens = createRefreshTokens({
    store,
    now,
    ttlSeconds: 3600,
    retryGraceSeconds: 30,
    successorSecret: async () => Buffer.alloc(32, 7),
  });
  const accessTokens = createAccessTokenIssuer({
    keys,
    now,
    issuer: "https://issuer.test",
    audience: "test",
    ttlSeconds: 900,
  });
  const throttle = createLoginThrottle({ store, now, policy: defaultLoginThrottlePolicy });
  return {
    keys,
    accounts: createAccounts({ store, now, accessTokens, refreshTokens, throttle, scryptParams }),
  };
}

describe("accounts", () => {
  it("registers customers and signs them in with their roles in the token", async () => {
    const { keys, accounts: domain } = accounts();
    await keys.ensureSigningKey();
    const email = uniqueEmail("Mixed.Case");
    const user = await domain.register(email, "a good password");
    expect(user).toMatchObject({ email, roles: ["customer"] });
    expect(user).not.toHaveProperty("passwordHash");

    const { user: signedIn, tokens } = await domain.login(email.toLowerCase(), "a good password");
    expect(signedIn.id).toBe(user.id);
    expect(decodeJwt(tokens.accessToken)).toMatchObject({
      sub: user.id,
      roles: ["customer"],
      email,
      iss: "https://issuer.test",
      aud: "test",
    });

    const duplicate = await domain.register(email.toUpperCase(), "other password").catch((e) => e);
    expect(duplicate).toBeInstanceOf(DomainError);
    expect(duplicate).toMatchObject({
      kind: "already_exists",
      message: accountMessages.emailTaken,
    });
  });

  it("upgrades a password hash made with weaker parameters at the next login", async () => {
    const weak = { N: 2 ** 12, r: 8, p: 1 };
    const { keys, accounts: before } = accounts(weak);
    await keys.ensureSigningKey();
    const email = uniqueEmail("upgrade");
    await before.register(email, "upgrade me please");
    const hashOf = async () => (await testStore.store.findUserByEmail(email))!.passwordHash;
    expect(parsePasswordHash(await hashOf())?.params).toEqual(weak);

    await accounts().accounts.login(email, "upgrade me please");
    expect(parsePasswordHash(await hashOf())?.params.N).toBe(2 ** 15);
    await expect(accounts().accounts.login(email, "upgrade me please")).resolves.toBeDefined();
  });

  it("provisions a new administrator, idempotently", async () => {
    const { accounts: domain } = accounts();
    const fresh = uniqueEmail("admin");
    const created = await domain.provisionAdmin(fresh, "admin password");
    expect(created).toMatchObject({
      created: true,
      promoted: false,
      refused: false,
      user: { email: fresh, roles: ["admin", "customer"] },
    });
    // Provisioning again (every start) changes nothing.
    const again = await domain.provisionAdmin(fresh, "admin password");
    expect(again).toMatchObject({
      created: false,
      promoted: false,
      refused: false,
      user: { id: created.user.id, roles: ["admin", "customer"] },
    });
  });

  it("promotes an existing account only when ADMIN_PASSWORD is its password", async () => {
    const { accounts: domain } = accounts();
    const squatted = uniqueEmail("squatter");
    const squatter = await domain.register(squatted, "squatter password");
    const refused = await domain.provisionAdmin(squatted.toUpperCase(), "the real admin password");
    expect(refused).toMatchObject({ created: false, promoted: false, refused: true });
    expect((await testStore.store.findUserById(squatter.id))?.roles).toEqual(["customer"]);

    const owned = uniqueEmail("owner");
    const owner = await domain.register(owned, "owner password");
    const promoted = await domain.provisionAdmin(owned, "owner password");
    expect(promoted).toMatchObject({
      created: false,
      promoted: true,
      refused: false,
      user: { id: owner.id, roles: ["admin", "customer"] },
    });
    const stored = await testStore.store.findUserById(owner.id);
    expect(stored?.roles).toEqual(["admin", "customer"]);
    await expect(verifyPassword("owner password", stored!.passwordHash)).resolves.toBe(true);
  });
});
