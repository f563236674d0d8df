import { create } from "@bufbuild/protobuf";
import { Code, createClient, type Transport } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import { AuthService, RegisterRequestSchema } from "@thinmesh/contracts/shop/auth/v1/auth_pb.js";
import { createTokenVerifier } from "@thinmesh/platform";
import { rpcError } from "@thinmesh/platform/testing";
import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type AuthUnderTest, startAuth, uniqueEmail } from "./support.js";

const issuer = "https://auth.thinmesh.local";
const audience = "thinmesh";
const admin = { email: "Admin@Example.com", password: "admin-password-123" };

let auth: AuthUnderTest;
let client: ReturnType<typeof createClient<typeof AuthService>>;
const jwksUrl = () => new URL(`${auth.service.url}/.well-known/jwks.json`);

beforeAll(async () => {
  auth = await startAuth("auth_service", {
    ADMIN_EMAIL: admin.email,
    ADMIN_PASSWORD: admin.password,
    MAX_REQUEST_BYTES: "4096",
  });
  client = createClient(
    AuthService,
    createConnectTransport({ baseUrl: auth.service.url, httpVersion: "1.1" }),
  );
});
afterAll(async () => {
  await auth?.stop();
});

async function registerAndLogin(password = "correct horse battery") {
  const email = uniqueEmail();
  const { user } = await client.register({ email, password });
  const login = await client.login({ email, password });
  return { email, password, user: user!, login };
}

describe("register and login", () => {
  it("issues an access token that verifies against the served JWKS", async () => {
    const { email, user, login } = await registerAndLogin();
    expect(user.id).toMatch(/^[\da-f]{8}-[\da-f]{4}-4[\da-f]{3}-[89ab][\da-f]{3}-[\da-f]{12}$/);
    expect(user).toMatchObject({ email, roles: ["customer"] });
    expect(Math.abs(Number(user.createTime!.seconds) * 1000 - Date.now())).toBeLessThan(60_000);
    expect(login.user?.id).toBe(user.id);
    const tokens = login.tokens!;
    expect(tokens).toMatchObject({ tokenType: "Bearer", expiresIn: 900 });
    expect(tokens.refreshToken).toMatch(/^[\w-]{43}$/);
    const refreshExpiry = Number(tokens.refreshExpireTime!.seconds) * 1000;
    expect(refreshExpiry - Date.now()).toBeGreaterThan(29 * 24 * 3600 * 1000);

    const { payload, protectedHeader } = await jwtVerify(
      tokens.accessToken,
      createRemoteJWKSet(jwksUrl()),
      { algorithms: ["ES256"], issuer, audience, requiredClaims: ["exp", "iat", "sub"] },
    );
    expect(payload).toMatchObject({
      sub: user.id,
      roles: ["customer"],
      email,
      iss: issuer,
      aud: audience,
    });
    expect(payload.exp! - payload.iat!).toBe(900);
    expect(protectedHeader).toMatchObject({ alg: "ES256", kid: expect.any(String) });

    const claims = await createTokenVerifier({ keys: jwksUrl(), issuer, audience }).verify(
      tokens.accessToken,
    );
    expect(claims).toMatchObject({ subject: user.id, roles: ["customer"] });
  });

  it("rejects the token for another audience or issuer", async () => {
    const { login } = await registerAndLogin();
    const keys = createRemoteJWKSet(jwksUrl());
    const token = login.tokens!.accessToken;
    await expect(
      jwtVerify(token, keys, { algorithms: ["ES256"], issuer, audience: "other" }),
    ).rejects.toThrow(/aud/);
    await expect(
      jwtVerify(token, keys, { algorithms: ["ES256"], issuer: "https://evil", audience }),
    ).rejects.toThrow(/iss/);
  });

  it("refuses a second account for the same email, whatever its case", async () => {
    const email = uniqueEmail("dup");
    await client.register({ email, password: "first password" });
    const before = await auth.rowCounts();
    for (const again of [
      email,
      email.toUpperCase(),
      `${email[0]!.toUpperCase()}${email.slice(1)}`,
    ]) {
      const error = await rpcError(client.register({ email: again, password: "second password" }));
      expect(error.code).toBe(Code.AlreadyExists);
      expect(error.rawMessage).toBe("an account with this email already exists");
    }
    expect((await auth.rowCounts()).users).toBe(before.users);
    // The email is stored as typed and matched regardless of case at login.
    const login = await client.login({ email: email.toUpperCase(), password: "first password" });
    expect(login.user?.email).toBe(email);
  });

  it("answers a wrong password and an unknown email alike, in similar time", async () => {
    const { email } = await registerAndLogin();
    const attempt = async (loginEmail: string) => {
      const started = performance.now();
      const error = await rpcError(client.login({ email: loginEmail, password: "wrong password" }));
      return { error, ms: performance.now() - started };
    };
    const wrong: number[] = [];
    const unknown: number[] = [];
    for (let i = 0; i < 5; i++) {
      const a = await attempt(email);
      const b = await attempt(uniqueEmail("nobody"));
      for (const { error } of [a, b]) {
        expect(error.code).toBe(Code.Unauthenticated);
        expect(error.rawMessage).toBe("email or password is incorrect");
      }
      wrong.push(a.ms);
      unknown.push(b.ms);
    }
    const median = (xs: number[]) => xs.sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
    const [w, u] = [median(wrong), median(unknown)];
    // Both paths run one scrypt (tens of ms); skipping it for unknown emails would be ~1 ms.
    expect(u).toBeGreaterThan(w / 3);
    expect(w).toBeGreaterThan(u / 3);
  });
});

describe("refresh", () => {
  it("rotates, and reusing a spent token revokes the whole family", async () => {
    const { user, login } = await registerAndLogin();
    const first = login.tokens!.refreshToken;
    const second = (await client.refresh({ refreshToken: first })).tokens!;
    expect(second.refreshToken).not.toBe(first);
    const { payload } = await jwtVerify(second.accessToken, createRemoteJWKSet(jwksUrl()), {
      algorithms: ["ES256"],
      issuer,
      audience,
    });
    expect(payload.sub).toBe(user.id);

    const third = (await client.refresh({ refreshToken: second.refreshToken })).tokens!;
    // `first` again: its successor is spent, so this is no retry but a stolen token.
    const reuse = await rpcError(client.refresh({ refreshToken: first }));
    expect(reuse.code).toBe(Code.Unauthenticated);
    expect(reuse.rawMessage).toBe("refresh token was already used; sign in again");
    for (const token of [third.refreshToken, second.refreshToken, first]) {
      const error = await rpcError(client.refresh({ refreshToken: token }));
      expect(error.code).toBe(Code.Unauthenticated);
    }
  });

  it("answers a retried refresh with the same successor", async () => {
    const { login } = await registerAndLogin();
    const first = login.tokens!.refreshToken;
    const a = (await client.refresh({ refreshToken: first })).tokens!;
    const b = (await client.refresh({ refreshToken: first })).tokens!;
    expect(b.refreshToken).toBe(a.refreshToken);
    expect(b.refreshExpireTime).toEqual(a.refreshExpireTime);
    // The family is intact: the successor still works.
    await expect(client.refresh({ refreshToken: a.refreshToken })).resolves.toBeDefined();
  });

  it("rejects an unknown refresh token", async () => {
    const error = await rpcError(client.refresh({ refreshToken: "A".repeat(43) }));
    expect(error.code).toBe(Code.Unauthenticated);
    expect(error.rawMessage).toBe("refresh token is not valid; sign in again");
  });
});

describe("bad input", () => {
  const post = (method: string, body: string) =>
    fetch(`${auth.service.url}/shop.auth.v1.AuthService/${method}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body,
    });
  const good = { email: "someone@example.com", password: "long enough password" };
  const huge = "x".repeat(8000); // MAX_REQUEST_BYTES is 4096 here
  const tooLarge = /larger than configured readMaxBytes 4096/;

  // [method, case, body, expected code, what the message must name]
  const cases: [string, string, string, string, RegExp][] = [
    ...["Register", "Login"].flatMap((method): [string, string, string, string, RegExp][] => [
      [
        method,
        "malformed JSON",
        "{not json",
        "invalid_argument",
        RegExp(`${method}Request from JSON`),
      ],
      [
        method,
        "a wrong type",
        JSON.stringify({ ...good, email: 42 }),
        "invalid_argument",
        RegExp(`${method}Request\\.email from JSON`),
      ],
      [method, "missing fields", "{}", "invalid_argument", /email: value is empty.*; password: /],
      [
        method,
        "an invalid email",
        JSON.stringify({ ...good, email: "not-an-email" }),
        "invalid_argument",
        /^invalid request: email: /,
      ],
      [
        method,
        "an oversized body",
        JSON.stringify({ ...good, password: huge }),
        "resource_exhausted",
        tooLarge,
      ],
      [
        method,
        "an overlong password",
        JSON.stringify({ ...good, password: "p".repeat(129) }),
        "invalid_argument",
        /^invalid request: password: /,
      ],
    ]),
    [
      "Register",
      "a short password",
      JSON.stringify({ ...good, password: "short" }),
      "invalid_argument",
      /^invalid request: password: must be at least 8/,
    ],
    [
      "Login",
      "an empty password",
      JSON.stringify({ ...good, password: "" }),
      "invalid_argument",
      /^invalid request: password: /,
    ],
    ["Refresh", "malformed JSON", "[1,", "invalid_argument", /RefreshRequest from JSON/],
    [
      "Refresh",
      "a wrong type",
      JSON.stringify({ refreshToken: { nested: true } }),
      "invalid_argument",
      /RefreshRequest\.refresh_token from JSON/,
    ],
    ["Refresh", "a missing field", "{}", "invalid_argument", /^invalid request: refresh_token: /],
    [
      "Refresh",
      "an overlong token",
      JSON.stringify({ refreshToken: "t".repeat(257) }),
      "invalid_argument",
      /^invalid request: refresh_token: /,
    ],
    [
      "Refresh",
      "an oversized body",
      JSON.stringify({ refreshToken: huge }),
      "resource_exhausted",
      tooLarge,
    ],
  ];

  it.each(cases)("%s rejects %s, and writes nothing", async (method, _case, body, code, names) => {
    const before = await auth.rowCounts();
    const response = await post(method, body);
    const answer = (await response.json()) as { code: string; message: string };
    expect(answer.code).toBe(code);
    expect(answer.message).toMatch(names);
    expect(response.status).toBe(code === "invalid_argument" ? 400 : 429);
    expect(await auth.rowCounts()).toEqual(before);
  });

  it("accepts the same body once it is valid (the cases above fail for their reason)", async () => {
    const body = { email: uniqueEmail("valid"), password: good.password };
    const response = await post("Register", JSON.stringify(body));
    expect(response.status).toBe(200);
  });
});

describe("protocols", () => {
  const transports: [string, () => Transport][] = [
    ["gRPC over HTTP/2", () => createGrpcTransport({ baseUrl: auth.service.url })],
    [
      "gRPC-Web over HTTP/1.1",
      () => createGrpcWebTransport({ baseUrl: auth.service.url, httpVersion: "1.1" }),
    ],
  ];
  it.each(transports)("serves %s", async (_name, transport) => {
    const grpcClient = createClient(AuthService, transport());
    const email = uniqueEmail("grpc");
    const { user } = await grpcClient.register(
      create(RegisterRequestSchema, { email, password: "grpc password" }),
    );
    expect(user?.email).toBe(email);
    const duplicate = await rpcError(grpcClient.register({ email, password: "grpc password" }));
    expect(duplicate.code).toBe(Code.AlreadyExists);
    const bad = await rpcError(grpcClient.login({ email: "nope", password: "x" }));
    expect(bad.code).toBe(Code.InvalidArgument);
    expect(bad.rawMessage).toMatch(/email/);
  });
});

describe("well-known documents", () => {
  it("serves the JWKS with public keys only and a short cache lifetime", async () => {
    const response = await fetch(jwksUrl());
    expect(response.status).toBe(200);
    expect(response.headers.get("cache-control")).toMatch(/max-age=\d{1,3}\b/);
    const { keys } = (await response.json()) as { keys: Record<string, unknown>[] };
    expect(keys.length).toBeGreaterThanOrEqual(1);
    for (const key of keys) {
      expect(key).toMatchObject({
        kty: "EC",
        crv: "P-256",
        alg: "ES256",
        use: "sig",
        kid: expect.any(String),
      });
      expect(key).not.toHaveProperty("d");
    }
    const { accessToken } = (await registerAndLogin()).login.tokens!;
    expect(keys.map((k) => k.kid)).toContain(decodeProtectedHeader(accessToken).kid);
  });

  it("serves an OpenID configuration pointing at the JWKS", async () => {
    const response = await fetch(`${auth.service.url}/.well-known/openid-configuration`);
    expect(response.status).toBe(200);
    const document = (await response.json()) as Record<string, unknown>;
    expect(document).toMatchObject({
      issuer,
      jwks_uri: jwksUrl().href,
      id_token_signing_alg_values_supported: ["ES256"],
    });
    const forwarded = await fetch(`${auth.service.url}/.well-known/openid-configuration`, {
      headers: { "x-forwarded-proto": "https" },
    });
    expect(((await forwarded.json()) as { jwks_uri: string }).jwks_uri).toMatch(/^https:/);
  });
});

describe("administrator", () => {
  it("is provisioned from configuration with the admin role in its token", async () => {
    const { user, tokens } = await client.login({
      email: admin.email.toLowerCase(),
      password: admin.password,
    });
    expect(user).toMatchObject({ email: admin.email, roles: ["admin", "customer"] });
    const claims = await createTokenVerifier({ keys: jwksUrl(), issuer, audience }).verify(
      tokens!.accessToken,
    );
    expect(claims.roles).toEqual(["admin", "customer"]);
  });
});
