import {
  type CryptoKey,
  compactVerify,
  exportJWK,
  generateKeyPair,
  type JSONWebKeySet,
  SignJWT,
} from "jose";
import { beforeAll, describe, expect, it, vi } from "vitest";
import { createRequestAuthenticator, JWT_MESSAGES, removeQueryParam } from "../../src/mesh/jwt.js";
import { configFrom, headers, repoConfig } from "./support.js";

// Counts signature checks, to show which requests are answered from the verified-token cache.
vi.mock("jose", async (importOriginal) => {
  const jose = await importOriginal<typeof import("jose")>();
  return { ...jose, compactVerify: vi.fn(jose.compactVerify) };
});

const ISSUER = "https://auth.thinmesh.local";
const order = { namespace: "shop", labels: { app: "order", version: "v1" } };
let jwks: JSONWebKeySet;
let sign: (
  claims: Record<string, unknown>,
  options?: { kid?: string; key?: CryptoKey },
) => Promise<string>;
let otherKey: CryptoKey;
let privateSigningKey: CryptoKey | undefined;
const signingKey = async () => privateSigningKey;
const NOW = 1_800_000_000_000;

beforeAll(async () => {
  const { privateKey, publicKey } = await generateKeyPair("ES256", { extractable: true });
  privateSigningKey = privateKey;
  otherKey = (await generateKeyPair("ES256")).privateKey;
  jwks = { keys: [{ ...(await exportJWK(publicKey)), kid: "k1", alg: "ES256", use: "sig" }] };
  sign = (claims, { kid = "k1", key = privateKey } = {}) =>
    new SignJWT(claims).setProtectedHeader({ alg: "ES256", kid }).sign(key);
});

const valid = (over: Record<string, unknown> = {}) => ({
  iss: ISSUER,
  sub: "user-1",
  aud: "thinmesh",
  exp: NOW / 1000 + 600,
  roles: ["customer"],
  ...over,
});

function authenticator(config = repoConfig(), workload = order) {
  const fetched: string[] = [];
  const auth = createRequestAuthenticator(
    config,
    workload,
    async (uri) => {
      fetched.push(uri);
      return jwks;
    },
    () => NOW,
  );
  const call = (values: Record<string, string> = {}, query = "") =>
    auth.authenticate({ header: headers(values), query: new URLSearchParams(query) });
  return { call, fetched };
}
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

describe("RequestAuthentication (mesh/istio/request-authentication.yaml at order)", () => {
  it("passes a request without a token with no identity", async () => {
    expect(await authenticator().call()).toEqual({ ok: true, remove: [] });
  });

  it("accepts a valid token: principal iss/sub, claims, and the token forwarded (forwardOriginalToken)", async () => {
    const { call, fetched } = authenticator();
    const result = await call(bearer(await sign(valid())));
    expect(result).toMatchObject({ ok: true, principal: `${ISSUER}/user-1`, remove: [] });
    expect(result.ok && result.claims?.roles).toEqual(["customer"]);
    expect(fetched).toEqual(["http://auth.shop.svc.cluster.local:8080/.well-known/jwks.json"]);
    await call(bearer(await sign(valid())));
    expect(fetched).toHaveLength(1); // cached
  });

  it("reads the access_token query parameter too (Envoy's default location)", async () => {
    const token = await sign(valid());
    expect(await authenticator().call({}, `access_token=${token}`)).toMatchObject({ ok: true });
  });

  const refused = async (token: string, message: string, status = 401) => {
    const result = await authenticator().call(bearer(token));
    expect(result).toMatchObject({ ok: false, status, body: message });
  };
  const unsigned = (header: unknown, payload: unknown) =>
    `${Buffer.from(JSON.stringify(header)).toString("base64url")}.${Buffer.from(JSON.stringify(payload)).toString("base64url")}.c2ln`;

  it("refuses with jwt_verify_lib's messages", async () => {
    await refused("not-a-jwt", JWT_MESSAGES.badFormat);
    await refused("a.b.c.d", JWT_MESSAGES.badFormat);
    await refused("bm90anNvbg.e30.c2ln", JWT_MESSAGES.headerParse);
    await refused(await sign(valid({ iss: "https://elsewhere" })), JWT_MESSAGES.unknownIssuer);
    await refused(await sign(valid({ exp: NOW / 1000 - 61 })), JWT_MESSAGES.expired);
    await refused(await sign(valid({ nbf: NOW / 1000 + 61 })), JWT_MESSAGES.notYetValid);
    // Envoy's filter.cc: an audience it does not allow is 403 (gRPC: PERMISSION_DENIED).
    await refused(await sign(valid({ aud: "someone-else" })), JWT_MESSAGES.audience, 403);
    await refused(await sign(valid({ aud: undefined })), JWT_MESSAGES.audience, 403);
    await refused(await sign(valid(), { kid: "unknown" }), JWT_MESSAGES.kidAlg);
    await refused(await sign(valid(), { key: otherKey }), JWT_MESSAGES.verification);
  });

  it("parses as jwt_verify_lib does: field types, base64url, alg", async () => {
    const alg = { alg: "ES256", kid: "k1" };
    const payload = valid();
    await refused("e30..e30", JWT_MESSAGES.badFormat);
    await refused("a..b.c", JWT_MESSAGES.headerBase64); // empty sections are skipped
    await refused("a*b.e30.c2ln", JWT_MESSAGES.headerBase64);
    await refused(unsigned({ kid: "k1" }, payload), JWT_MESSAGES.headerAlg);
    await refused(unsigned({ alg: "none" }, payload), JWT_MESSAGES.headerAlgNotImplemented);
    await refused(unsigned({ alg: "ES256", kid: 1 }, payload), JWT_MESSAGES.headerKid);
    await refused(unsigned(alg, { ...payload, exp: "1" }), JWT_MESSAGES.expNotInteger);
    await refused(unsigned(alg, { ...payload, exp: -1 }), JWT_MESSAGES.expOutOfRange);
    await refused(unsigned(alg, { ...payload, nbf: true }), JWT_MESSAGES.nbfNotInteger);
    await refused(unsigned(alg, { ...payload, iat: null }), JWT_MESSAGES.iatNotInteger);
    await refused(unsigned(alg, { ...payload, sub: 7 }), JWT_MESSAGES.subNotString);
    await refused(unsigned(alg, { ...payload, iss: 7 }), JWT_MESSAGES.issNotString);
    await refused(unsigned(alg, { ...payload, jti: 7 }), JWT_MESSAGES.jtiNotString);
    await refused(unsigned(alg, { ...payload, aud: ["a", 1] }), JWT_MESSAGES.audNotString);
    await refused(unsigned(alg, [1]), JWT_MESSAGES.payloadParse);
    await refused(`${unsigned(alg, payload).slice(0, -4)}c*g`, JWT_MESSAGES.signatureBase64);
  });

  it("compares audiences as jwt_verify_lib does: no scheme, no trailing slash", async () => {
    const config = (audience: string) =>
      configFrom(`
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: { name: order }
spec:
  selector: { matchLabels: { app: order } }
  jwtRules:
    - issuer: ${ISSUER}
      jwksUri: http://auth.shop.svc.cluster.local:8080/.well-known/jwks.json
      audiences: ["${audience}"]
`);
    const token = await sign(valid({ aud: "https://thinmesh.local/" }));
    expect(await authenticator(config("thinmesh.local")).call(bearer(token))).toMatchObject({
      ok: true,
    });
    expect(await authenticator(config("http://thinmesh.local")).call(bearer(token))).toMatchObject({
      ok: true,
    });
    expect(await authenticator(config("thinmesh")).call(bearer(token))).toMatchObject({
      ok: false,
      status: 403,
    });
  });

  it("reads the Bearer prefix as Envoy does: case-sensitive, a bare prefix is a malformed token", async () => {
    const token = await sign(valid());
    const { call } = authenticator();
    expect(await call({ authorization: `bearer ${token}` })).toEqual({ ok: true, remove: [] });
    expect(await call({ authorization: "Bearer " })).toMatchObject({
      ok: false,
      status: 401,
      body: JWT_MESSAGES.badFormat,
    });
  });

  it("splits space-delimited scope and permission claims (Istio's default)", async () => {
    const result = await authenticator().call(
      bearer(await sign(valid({ scope: "read  write", permission: "admin", other: "a b" }))),
    );
    expect(result.ok && result.claims).toMatchObject({
      scope: ["read", "write"],
      permission: ["admin"],
      other: "a b",
    });
  });

  it("names the request's URI in the challenge", async () => {
    const auth = createRequestAuthenticator(
      repoConfig(),
      order,
      async () => jwks,
      () => NOW,
    );
    const result = await auth.authenticate({
      header: headers(bearer("bad")),
      query: new URLSearchParams(),
      uri: "https://order:8080/x?y=1",
    });
    expect(result).toMatchObject({
      ok: false,
      headers: {
        "www-authenticate": 'Bearer realm="https://order:8080/x?y=1", error="invalid_token"',
      },
    });
  });

  it("tries every key whose kid and alg fit, as jwt_verify_lib; a wrong key type fits but fails", async () => {
    const other = await exportJWK(
      (await generateKeyPair("ES256", { extractable: true })).publicKey,
    );
    const rsa = await exportJWK((await generateKeyPair("RS256", { extractable: true })).publicKey);
    const right = { ...jwks.keys[0]!, kid: undefined };
    const check = (keys: JSONWebKeySet["keys"], token: string) =>
      createRequestAuthenticator(
        repoConfig(),
        order,
        async () => ({ keys }),
        () => NOW,
      ).authenticate({ header: headers(bearer(token)), query: new URLSearchParams() });
    const noKid = await new SignJWT(valid())
      .setProtectedHeader({ alg: "ES256" })
      .sign((await signingKey())!);
    expect(await check([other, right], noKid)).toMatchObject({ ok: true });
    expect(await check([{ ...rsa, kid: "k1" }], await sign(valid()))).toMatchObject({
      ok: false,
      body: JWT_MESSAGES.verification,
    });
  });

  it("accepts an issuer only from the locations its rule names (Envoy's isIssuerAllowed)", async () => {
    const config = configFrom(`
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: { name: order }
spec:
  selector: { matchLabels: { app: order } }
  jwtRules:
    - issuer: ${ISSUER}
      jwksUri: http://auth.shop.svc.cluster.local:8080/.well-known/jwks.json
    - issuer: https://other.issuer
      jwksUri: http://auth.shop.svc.cluster.local:8080/.well-known/jwks.json
      fromHeaders: [{ name: x-other }]
`);
    const { call } = authenticator(config);
    const token = await sign(valid());
    expect(await call(bearer(token))).toMatchObject({ ok: true });
    expect(await call({ "x-other": token })).toMatchObject({
      ok: false,
      body: JWT_MESSAGES.unknownIssuer,
    });
  });

  it("allows Envoy's 60 s clock skew", async () => {
    expect(
      await authenticator().call(bearer(await sign(valid({ exp: NOW / 1000 - 30 })))),
    ).toMatchObject({ ok: true });
  });

  it("refetches the JWKS on an unknown kid once the cache is 30 s old, and says when fetching fails", async () => {
    let now = NOW;
    let served = { keys: [] } as JSONWebKeySet;
    const fetched: number[] = [];
    const auth = createRequestAuthenticator(
      repoConfig(),
      order,
      async () => {
        fetched.push(now);
        return served;
      },
      () => now,
    );
    const call = async () =>
      auth.authenticate({
        header: headers(bearer(await sign(valid()))),
        query: new URLSearchParams(),
      });
    expect(await call()).toMatchObject({ ok: false, body: JWT_MESSAGES.kidAlg });
    served = jwks; // auth rotated its keys
    expect(await call()).toMatchObject({ ok: false, body: JWT_MESSAGES.kidAlg }); // too soon
    now += 30_000;
    expect(await call()).toMatchObject({ ok: true });
    expect(fetched).toHaveLength(2);
    const failing = createRequestAuthenticator(
      repoConfig(),
      order,
      async () => {
        throw new Error("connection refused");
      },
      () => NOW,
    );
    expect(
      await failing.authenticate({
        header: headers(bearer(await sign(valid()))),
        query: new URLSearchParams(),
      }),
    ).toMatchObject({ ok: false, status: 401, body: JWT_MESSAGES.fetch });
  });

  it("applies only to the workloads its selector names", async () => {
    const payment = { namespace: "shop", labels: { app: "payment", version: "v1" } };
    // No RequestAuthentication for payment: a token is neither checked nor turned into an identity.
    expect(await authenticator(repoConfig(), payment).call(bearer("garbage"))).toEqual({
      ok: true,
      remove: [],
    });
  });

  it("strips the token by default (forwardOriginalToken false) and reads fromHeaders", async () => {
    const config = configFrom(`
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: { name: order }
spec:
  selector: { matchLabels: { app: order } }
  jwtRules:
    - issuer: ${ISSUER}
      jwksUri: http://auth.shop.svc.cluster.local:8080/.well-known/jwks.json
      fromHeaders: [{ name: x-token }]
`);
    const { call } = authenticator(config);
    const token = await sign(valid({ aud: "anything" })); // no audiences listed: any is accepted
    expect(await call({ "x-token": token })).toMatchObject({
      ok: true,
      remove: [{ header: "x-token" }],
    });
    // Authorization is not a location of this rule.
    expect(await call(bearer("garbage"))).toEqual({ ok: true, remove: [] });
  });

  it("removes a token exactly where it was read: its header, or its query parameter", async () => {
    const { call } = authenticator(); // the repo's rule forwards its token; strip by default here
    const config = configFrom(`
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: { name: order }
spec:
  selector: { matchLabels: { app: order } }
  jwtRules:
    - issuer: ${ISSUER}
      jwksUri: http://auth.shop.svc.cluster.local:8080/.well-known/jwks.json
`);
    const token = await sign(valid());
    expect(await call({}, `access_token=${token}`)).toMatchObject({ remove: [] });
    const strip = authenticator(config).call;
    expect(await strip({}, `a=1&access_token=${token}`)).toMatchObject({
      ok: true,
      remove: [{ param: "access_token" }],
    });
    expect(await strip(bearer(token))).toMatchObject({ remove: [{ header: "authorization" }] });
    expect(removeQueryParam(`/p?a=%20x&access_token=${token}&b`, "access_token")).toBe(
      "/p?a=%20x&b",
    );
    expect(removeQueryParam(`/p?access_token=${token}`, "access_token")).toBe("/p");
    expect(removeQueryParam("/p", "access_token")).toBe("/p");
  });

  it("checks a token's signature once per JWKS key, and its time and issuer on every request", async () => {
    let now = NOW;
    let served = jwks;
    const auth = createRequestAuthenticator(
      repoConfig(),
      order,
      async () => served,
      () => now,
    );
    const call = (token: string) =>
      auth.authenticate({ header: headers(bearer(token)), query: new URLSearchParams() });
    const token = await sign(valid({ exp: NOW / 1000 + 600 }));
    vi.mocked(compactVerify).mockClear();
    for (let i = 0; i < 3; i++) {
      expect(await call(token)).toMatchObject({ ok: true, principal: `${ISSUER}/user-1` });
    }
    expect(compactVerify).toHaveBeenCalledTimes(1);
    // A remembered signature does not outlive the token.
    now = NOW + (600 + 61) * 1000;
    expect(await call(token)).toMatchObject({ ok: false, body: JWT_MESSAGES.expired });
    // auth rotated k1 to a new key pair: once the JWKS is refetched (5 min), the old token's
    // signature is checked again, against the new key, and fails.
    now = NOW;
    const rotated = await generateKeyPair("ES256", { extractable: true });
    served = {
      keys: [{ ...(await exportJWK(rotated.publicKey)), kid: "k1", alg: "ES256", use: "sig" }],
    };
    now += 5 * 60_000;
    expect(await call(token)).toMatchObject({ ok: false, body: JWT_MESSAGES.verification });
    const fresh = await sign(valid({ exp: now / 1000 + 600 }), { key: rotated.privateKey });
    expect(await call(fresh)).toMatchObject({ ok: true });
    expect(await call(fresh)).toMatchObject({ ok: true });
    expect(compactVerify).toHaveBeenCalledTimes(3);
  });
});
