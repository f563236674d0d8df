import { createHmac } from "node:crypto";
import { exportJWK, exportSPKI, generateKeyPair, type JWK, type JWTPayload, SignJWT } from "jose";
import { startTestHttpServer } from "./peers.js";

export interface TestTokenOptions {
  subject?: string;
  roles?: string[];
  issuer?: string;
  audience?: string;
  /** Seconds from now; negative for an expired token. */
  expiresIn?: number;
  /** Seconds from now for nbf; positive for a token not yet valid. */
  notBefore?: number;
  kid?: string;
  claims?: JWTPayload;
}

export interface TestIssuer {
  jwksUrl: string;
  issuer: string;
  audience: string;
  /** A validly signed ES256 token; options bend it into an invalid one. */
  token(options?: TestTokenOptions): Promise<string>;
  publicJwk: JWK;
  /** Tokens that a correct verifier must reject, each for one reason. */
  forgedTokens(options?: TestTokenOptions): Promise<Record<string, string>>;
  close(): Promise<void>;
}

/**
 * A stand-in for the auth service in other services' tests: an ES256 key pair, its JWKS
 * served over HTTP on loopback, and a way to mint good and bad tokens.
 */
export async function createTestIssuer(
  issuer = "https://auth.thinmesh.local",
  audience = "thinmesh",
): Promise<TestIssuer> {
  const { privateKey, publicKey } = await generateKeyPair("ES256", { extractable: true });
  const publicJwk = {
    ...(await exportJWK(publicKey)),
    kid: "test-key-1",
    alg: "ES256",
    use: "sig",
  };
  const server = await startTestHttpServer((req, res) => {
    if (req.url !== "/.well-known/jwks.json") {
      res.writeHead(404).end();
      return;
    }
    res
      .writeHead(200, { "content-type": "application/json" })
      .end(JSON.stringify({ keys: [publicJwk] }));
  });
  const sign = (options: TestTokenOptions, key: typeof privateKey = privateKey) => {
    const now = Math.floor(Date.now() / 1000);
    const jwt = new SignJWT({ roles: options.roles ?? ["customer"], ...options.claims })
      .setProtectedHeader({ alg: "ES256", kid: options.kid ?? publicJwk.kid })
      .setSubject(options.subject ?? "00000000-0000-4000-8000-000000000001")
      .setIssuer(options.issuer ?? issuer)
      .setAudience(options.audience ?? audience)
      .setIssuedAt(now)
      .setExpirationTime(now + (options.expiresIn ?? 900));
    if (options.notBefore !== undefined) jwt.setNotBefore(now + options.notBefore);
    return jwt.sign(key);
  };
  // Exactly these claims, signed with the published key: for tokens sign() cannot produce.
  const signClaims = (claims: JWTPayload) =>
    new SignJWT(claims).setProtectedHeader({ alg: "ES256", kid: publicJwk.kid }).sign(privateKey);
  return {
    jwksUrl: `${server.url}/.well-known/jwks.json`,
    issuer,
    audience,
    publicJwk,
    token: (options = {}) => sign(options),
    async forgedTokens(options = {}) {
      const valid = await sign(options);
      const [header, payload, signature] = valid.split(".") as [string, string, string];
      const encode = (value: object) => Buffer.from(JSON.stringify(value)).toString("base64url");
      const claims = JSON.parse(Buffer.from(payload, "base64url").toString());
      const hmacWithPublicKey = (secret: string) => {
        const head = encode({ alg: "HS256", typ: "JWT", kid: publicJwk.kid });
        const mac = createHmac("sha256", secret).update(`${head}.${payload}`).digest("base64url");
        return `${head}.${payload}.${mac}`;
      };
      const otherKey = (await generateKeyPair("ES256")).privateKey;
      const { iat: _iat, ...withoutIat } = claims;
      const tenYears = 10 * 365 * 24 * 3600;
      return {
        expired: await sign({ ...options, expiresIn: -120 }),
        notYetValid: await sign({ ...options, notBefore: 600 }),
        wrongAudience: await sign({ ...options, audience: "someone-else" }),
        wrongIssuer: await sign({ ...options, issuer: "https://evil.example" }),
        algNone: `${encode({ alg: "none", typ: "JWT" })}.${payload}.`,
        hs256WithPublicKeyPem: hmacWithPublicKey(await exportSPKI(publicKey)),
        hs256WithPublicJwk: hmacWithPublicKey(JSON.stringify(publicJwk)),
        tamperedPayload: `${header}.${encode({ ...claims, roles: ["admin", "customer"] })}.${signature}`,
        unknownKid: await sign({ ...options, kid: "not-a-published-key" }, otherKey),
        wrongKeySameKid: await sign(options, otherKey),
        garbage: "not.a.jwt",
        // Signed with the real key, but not by the issuer's rules.
        emptySubject: await sign({ ...options, subject: "" }),
        issuedInTheFuture: await signClaims({
          ...claims,
          iat: claims.iat + tenYears,
          exp: claims.exp + tenYears,
        }),
        expiresInYear3000: await signClaims({ ...claims, exp: Date.UTC(3000, 0, 1) / 1000 }),
        withoutIssuedAt: await signClaims(withoutIat),
      };
    },
    close: server.close,
  };
}
