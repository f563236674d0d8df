import { importJWK, jwtVerify, SignJWT } from "jose";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { signingKeys as signingKeysTable } from "../src/db/schema.js";
import {
  createSigningKeys,
  generateSigningKey,
  publicationWindowMs,
} from "../src/domain/signing-keys.js";
import { manualClock, openTestStore, testKeyEncryption } from "./support.js";

let testStore: Awaited<ReturnType<typeof openTestStore>>;

beforeAll(async () => {
  testStore = await openTestStore("auth_keys");
});
afterAll(async () => {
  await testStore?.close();
});
beforeEach(async () => {
  await testStore.db.delete(signingKeysTable);
});

const ttlSeconds = 900;
const cacheSeconds = 30;

function replica(clock = manualClock()) {
  const options = {
    store: testStore.store,
    now: clock.now,
    accessTokenTtlSeconds: ttlSeconds,
    cacheSeconds,
    keyEncryption: testKeyEncryption,
  };
  return { clock, keys: createSigningKeys(options), windowMs: publicationWindowMs(options) };
}

const kids = async (keys: ReturnType<typeof replica>["keys"]) =>
  (await keys.publishedKeys()).map((key) => key.kid).sort();

describe("signing keys", () => {
  it("creates one key on first start and reuses it afterwards", async () => {
    const { keys } = replica();
    const kid = await keys.ensureSigningKey();
    expect(await keys.ensureSigningKey()).toBe(kid);
    expect(await kids(keys)).toEqual([kid]);
    expect((await keys.currentSigningKey()).kid).toBe(kid);
    const [published] = await keys.publishedKeys();
    expect(published).toMatchObject({ kid, kty: "EC", crv: "P-256", alg: "ES256", use: "sig" });
    expect(published).not.toHaveProperty("d");
  });

  it("publishes both keys when two replicas created one at once, and signs with the newest", async () => {
    const { clock, keys } = replica();
    const older = await generateSigningKey(clock.now(), testKeyEncryption);
    const newer = await generateSigningKey(new Date(clock.now().getTime() + 1), testKeyEncryption);
    await testStore.store.addSigningKey(newer);
    await testStore.store.addSigningKey(older);
    expect(await kids(keys)).toEqual([older.kid, newer.kid].sort());
    expect((await keys.currentSigningKey()).kid).toBe(newer.kid);
    expect(await keys.ensureSigningKey()).toBe(newer.kid);
  });

  it("keeps the previous key published until its tokens expire, then drops it", async () => {
    const { clock, keys, windowMs } = replica();
    const old = await keys.ensureSigningKey();
    const signer = await keys.currentSigningKey();
    const oldToken = await new SignJWT({})
      .setProtectedHeader({ alg: "ES256", kid: signer.kid })
      .setExpirationTime("15m")
      .sign(signer.privateKey);

    const { kid: fresh, retired } = await keys.rotateSigningKey();
    expect(retired).toEqual([old]);
    expect(fresh).not.toBe(old);
    expect((await keys.currentSigningKey()).kid).toBe(fresh);
    expect(await kids(keys)).toEqual([old, fresh].sort());
    const oldJwk = (await keys.publishedKeys()).find((key) => key.kid === old)!;
    await expect(jwtVerify(oldToken, await importJWK(oldJwk, "ES256"))).resolves.toBeDefined();

    // The window covers a token's lifetime plus other replicas' key cache and clock skew.
    expect(windowMs).toBeGreaterThanOrEqual((ttlSeconds + cacheSeconds) * 1000);
    clock.advance(windowMs - 1_000);
    expect(await kids(keys)).toEqual([old, fresh].sort());
    clock.advance(2_000);
    expect(await kids(keys)).toEqual([fresh]);

    // The next rotation deletes the expired key's row, private half included.
    const next = await keys.rotateSigningKey();
    expect(next.deleted).toBe(1);
    const rows = await testStore.db.select().from(signingKeysTable);
    expect(rows.map((row) => row.kid).sort()).toEqual([fresh, next.kid].sort());
  });

  it("lets other replicas pick up a rotation once their cache expires", async () => {
    const a = replica();
    const b = replica(a.clock);
    const old = await a.keys.ensureSigningKey();
    expect((await b.keys.currentSigningKey()).kid).toBe(old);
    const { kid: fresh } = await a.keys.rotateSigningKey();
    // b keeps its cached key for a while (its tokens still verify: the old key stays published)...
    a.clock.advance((cacheSeconds - 1) * 1000);
    expect((await b.keys.currentSigningKey()).kid).toBe(old);
    expect(await kids(b.keys)).toContain(old);
    // ...then switches.
    a.clock.advance(2_000);
    expect((await b.keys.currentSigningKey()).kid).toBe(fresh);
  });
});
