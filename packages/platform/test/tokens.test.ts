import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { anyPack, timestampNow } from "@bufbuild/protobuf/wkt";
import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { MoneySchema } from "@thinmesh/contracts/shop/common/v1/money_pb.js";
import {
  DeliverRequestSchema,
  EventSinkService,
} from "@thinmesh/contracts/shop/events/v1/events_pb.js";
import { Hono } from "hono";
import { generateKeyPair, SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createTokenVerifier,
  type RunningService,
  requireToken,
  startService,
} from "../src/index.js";
import {
  createTestDatabase,
  createTestIssuer,
  rpcError,
  type TestDatabase,
  type TestIssuer,
  testEnv,
} from "../src/testing/index.js";
import { observed, sinkService } from "./fixtures/sink-service.js";

let database: TestDatabase;
let issuer: TestIssuer;
let service: RunningService;

beforeAll(async () => {
  issuer = await createTestIssuer("test-issuer", "test-audience");
  database = await createTestDatabase("platform_tokens");
  service = await startService(
    sinkService,
    testEnv(database, { JWKS_URL: issuer.jwksUrl, REQUIRE_ROLE: "admin" }),
  );
  await service.ready;
});
afterAll(async () => {
  await service?.stop();
  await database?.drop();
  await issuer?.close();
});

const deliver = (authorization?: string) => {
  const client = createClient(
    EventSinkService,
    createConnectTransport({ baseUrl: service.url, httpVersion: "1.1" }),
  );
  const request = create(DeliverRequestSchema, {
    events: [
      {
        id: randomUUID(),
        source: "test",
        type: "test.auth",
        time: timestampNow(),
        data: anyPack(MoneySchema, create(MoneySchema, { currencyCode: "EUR", amountMinor: 1n })),
      },
    ],
  });
  return client.deliver(request, authorization ? { headers: { authorization } } : {});
};

describe("access rules on RPCs", () => {
  it("accepts a valid token with the required role and hands the claims to the handler", async () => {
    const subject = randomUUID();
    observed.callers.length = 0;
    await deliver(`Bearer ${await issuer.token({ subject, roles: ["admin"] })}`);
    expect(observed.callers).toEqual([subject]);
  });

  it("refuses a call without a token as unauthenticated", async () => {
    const error = await rpcError(deliver());
    expect(error.code).toBe(Code.Unauthenticated);
    expect(error.message).toMatch(/needs an access token/);
  });

  it("refuses a malformed Authorization header", async () => {
    const error = await rpcError(deliver("Basic dXNlcjpwYXNz"));
    expect(error.code).toBe(Code.Unauthenticated);
  });

  it("refuses a valid token without the role as permission_denied", async () => {
    const error = await rpcError(deliver(`Bearer ${await issuer.token({ roles: ["customer"] })}`));
    expect(error.code).toBe(Code.PermissionDenied);
    expect(error.message).toMatch(/"admin" role/);
  });

  it.each([
    "expired",
    "notYetValid",
    "wrongAudience",
    "wrongIssuer",
    "algNone",
    "hs256WithPublicKeyPem",
    "hs256WithPublicJwk",
    "tamperedPayload",
    "unknownKid",
    "wrongKeySameKid",
    "garbage",
    "emptySubject",
    "issuedInTheFuture",
    "expiresInYear3000",
    "withoutIssuedAt",
  ])("refuses a %s token as unauthenticated", async (kind) => {
    const forged = await issuer.forgedTokens({ roles: ["admin"] });
    const error = await rpcError(deliver(`Bearer ${forged[kind]}`));
    expect(error.code).toBe(Code.Unauthenticated);
    expect(error.message).toMatch(/access token rejected/);
  });
});

describe("claims a token signed with the real key must still satisfy", () => {
  it.each([
    ["emptySubject", /claim "sub" must be a non-empty user id/],
    ["issuedInTheFuture", /claim "iat" is \d+ s in the future \(more than the 60 s clock skew/],
    [
      "expiresInYear3000",
      /valid for \d+ s \(exp − iat\), longer than the issuer's access-token lifetime of 900 s/,
    ],
    ["withoutIssuedAt", /claim "iat" missing/],
  ])("refuses %s and says what is wrong", async (kind, message) => {
    const forged = await issuer.forgedTokens({ roles: ["admin"] });
    const error = await rpcError(deliver(`Bearer ${forged[kind]}`));
    expect(error.code).toBe(Code.Unauthenticated);
    expect(error.rawMessage).toMatch(message);
  });

  it("allows the issuer's lifetime and iat within the clock skew, nothing beyond", async () => {
    const { privateKey, publicKey } = await generateKeyPair("ES256");
    const verifier = createTokenVerifier({
      keys: async () => publicKey,
      issuer: "test-issuer",
      audience: "test-audience",
      accessTokenTtlSeconds: 300,
      clockSkewSeconds: 10,
    });
    const now = Math.floor(Date.now() / 1000);
    const token = (iat: number, exp: number, sub = "user-1") =>
      new SignJWT({ roles: [] })
        .setProtectedHeader({ alg: "ES256" })
        .setSubject(sub)
        .setIssuer("test-issuer")
        .setAudience("test-audience")
        .setIssuedAt(iat)
        .setExpirationTime(exp)
        .sign(privateKey);
    // Generous margins either side of the limits: the machine may be slow.
    await expect(verifier.verify(await token(now, now + 310))).resolves.toMatchObject({
      subject: "user-1",
    });
    await expect(verifier.verify(await token(now + 5, now + 305))).resolves.toBeDefined();
    await expect(verifier.verify(await token(now, now + 311))).rejects.toMatchObject({
      kind: "unauthenticated",
      message: /longer than the issuer's access-token lifetime of 300 s \(plus 10 s skew\)/,
    });
    await expect(verifier.verify(await token(now + 30, now + 300))).rejects.toMatchObject({
      kind: "unauthenticated",
      message: /"iat" is 3\d s in the future/,
    });
    await expect(verifier.verify(await token(now, now + 300, "  "))).rejects.toMatchObject({
      kind: "unauthenticated",
      message: /"sub"/,
    });
  });

  it("takes the lifetime and skew from the shared token configuration", async () => {
    const { loadConfig, tokenConfigSchema, tokenVerifierOptions } = await import("../src/index.js");
    const config = loadConfig(tokenConfigSchema, {
      AUTH_JWKS_URL: "http://auth:8080/.well-known/jwks.json",
      AUTH_ACCESS_TOKEN_TTL_SECONDS: "120",
    });
    expect(tokenVerifierOptions(config)).toMatchObject({
      issuer: "https://auth.thinmesh.local",
      audience: "thinmesh",
      accessTokenTtlSeconds: 120,
      clockSkewSeconds: 60,
    });
  });
});

describe("token verifier", () => {
  it("requires exp even when the signature and kid are good", async () => {
    const verifier = createTokenVerifier({
      keys: async () => (await generateKeyPair("ES256")).publicKey,
      issuer: "test-issuer",
      audience: "test-audience",
    });
    const { privateKey, publicKey } = await generateKeyPair("ES256");
    const withoutExp = await new SignJWT({ roles: [] })
      .setProtectedHeader({ alg: "ES256" })
      .setSubject("x")
      .setIssuer("test-issuer")
      .setAudience("test-audience")
      .setIssuedAt()
      .sign(privateKey);
    const sameKey = createTokenVerifier({
      keys: async () => publicKey,
      issuer: "test-issuer",
      audience: "test-audience",
    });
    await expect(sameKey.verify(withoutExp)).rejects.toMatchObject({
      kind: "unauthenticated",
      message: /"exp"/,
    });
    await expect(verifier.verify(withoutExp)).rejects.toMatchObject({ kind: "unauthenticated" });
  });

  it("checks a token's signature once and remembers it only until it expires", async () => {
    const { privateKey, publicKey } = await generateKeyPair("ES256");
    let keyLookups = 0;
    const verifier = createTokenVerifier({
      keys: async () => {
        keyLookups++;
        return publicKey;
      },
      issuer: "test-issuer",
      audience: "test-audience",
    });
    const signed = (expiresAt: number) =>
      new SignJWT({ roles: ["customer"] })
        .setProtectedHeader({ alg: "ES256" })
        .setSubject("user-1")
        .setIssuer("test-issuer")
        .setAudience("test-audience")
        .setIssuedAt()
        .setExpirationTime(expiresAt)
        .sign(privateKey);
    const now = Math.floor(Date.now() / 1000);
    const token = await signed(now + 600);
    const first = await verifier.verify(token);
    expect(await verifier.verify(token)).toBe(first);
    expect(keyLookups).toBe(1);
    // A token differing in its signature is checked on its own: nothing is shared but bytes.
    const tampered = `${token.slice(0, -2)}${token.endsWith("AA") ? "BB" : "AA"}`;
    await expect(verifier.verify(tampered)).rejects.toMatchObject({ kind: "unauthenticated" });
    expect(keyLookups).toBe(2);
    // Past its exp (within jose's 5 s tolerance) the token is verified again, not served from memory.
    const expiring = await signed(now - 1);
    await verifier.verify(expiring);
    await verifier.verify(expiring);
    expect(keyLookups).toBe(4);
  });

  it("says the auth service is unavailable when its keys cannot be fetched", async () => {
    const verifier = createTokenVerifier({
      keys: new URL("http://127.0.0.1:9/.well-known/jwks.json"),
      issuer: "test-issuer",
      audience: "test-audience",
    });
    await expect(verifier.verify(await issuer.token())).rejects.toMatchObject({
      kind: "unavailable",
    });
  });
});

describe("plain routes", () => {
  const verifier = () =>
    createTokenVerifier({
      keys: new URL(issuer.jwksUrl),
      issuer: "test-issuer",
      audience: "test-audience",
    });
  const app = () => {
    const hono = new Hono<{ Variables: { caller: { subject: string } } }>();
    hono.use("/me", requireToken(verifier()));
    hono.get("/me", (c) => c.json({ subject: c.get("caller").subject }));
    return hono;
  };

  it("answers 401 with WWW-Authenticate without a valid token", async () => {
    const none = await app().request("/me");
    expect(none.status).toBe(401);
    expect(none.headers.get("www-authenticate")).toMatch(/Bearer/);
    const forged = await issuer.forgedTokens();
    const bad = await app().request("/me", {
      headers: { authorization: `Bearer ${forged.algNone}` },
    });
    expect(bad.status).toBe(401);
  });

  it("passes the caller's claims to the route", async () => {
    const ok = await app().request("/me", {
      headers: { authorization: `Bearer ${await issuer.token({ subject: "u-1" })}` },
    });
    expect(ok.status).toBe(200);
    expect(await ok.json()).toEqual({ subject: "u-1" });
  });
});
