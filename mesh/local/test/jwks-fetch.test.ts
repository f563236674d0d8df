import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRequestAuthenticator, JWT_MESSAGES } from "../src/mesh/jwt.js";
import { fetchJwksFrom, JWKS_FETCH_TIMEOUT_MS } from "../src/sidecar/mesh.js";
import { headers, repoConfig } from "./mesh/support.js";

// An issuer that accepts the request and never answers.
const hung = createServer(() => {});
let url: string;
beforeAll(async () => {
  await new Promise<void>((resolve) => hung.listen(0, "127.0.0.1", resolve));
  url = `http://127.0.0.1:${(hung.address() as AddressInfo).port}/.well-known/jwks.json`;
});
afterAll(() => {
  hung.closeAllConnections();
  hung.close();
});

describe("the sidecar's JWKS fetch", () => {
  it("gives up after Istio's default 5 s, and the token check answers Jwks remote fetch is failed", async () => {
    expect(JWKS_FETCH_TIMEOUT_MS).toBe(5_000);
    const auth = createRequestAuthenticator(
      repoConfig(),
      { namespace: "shop", labels: { app: "order", version: "v1" } },
      () => fetchJwksFrom(url, 100) as never,
    );
    const token = `${Buffer.from('{"alg":"ES256","kid":"k"}').toString("base64url")}.${Buffer.from(
      JSON.stringify({ iss: "https://auth.thinmesh.local", sub: "u", aud: "thinmesh" }),
    ).toString("base64url")}.c2ln`;
    const result = await auth.authenticate({
      header: headers({ authorization: `Bearer ${token}` }),
      query: new URLSearchParams(),
    });
    expect(result).toMatchObject({ ok: false, status: 401, body: JWT_MESSAGES.fetch });
  });
});
