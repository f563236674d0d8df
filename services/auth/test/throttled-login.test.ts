import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AuthService } from "@thinmesh/contracts/shop/auth/v1/auth_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type AuthUnderTest, startAuth, uniqueEmail } from "./support.js";

let auth: AuthUnderTest;
let client: ReturnType<typeof createClient<typeof AuthService>>;

beforeAll(async () => {
  // Three failures go through, then a two-second lock: short, since these tests wait it out,
  // and long enough that a loaded machine's slow scrypt cannot outlast it.
  auth = await startAuth("auth_throttled_login", {
    LOGIN_FREE_FAILURES: "3",
    LOGIN_FIRST_LOCK_SECONDS: "2",
    LOGIN_MAX_LOCK_SECONDS: "2",
  });
  client = createClient(
    AuthService,
    createConnectTransport({ baseUrl: auth.service.url, httpVersion: "1.1" }),
  );
});
afterAll(async () => {
  await auth?.stop();
});

/** The code, message and retry-after of a Login, "ok" when it signed in. */
async function login(email: string, password: string) {
  try {
    await client.login({ email, password });
    return { code: "ok" };
  } catch (error) {
    const e = ConnectError.from(error);
    return {
      code: Code[e.code],
      message: e.rawMessage,
      retryAfter: e.metadata.get("retry-after") ?? undefined,
    };
  }
}

const wrong = { code: "Unauthenticated", message: "email or password is incorrect" };
const throttled = {
  code: "ResourceExhausted",
  message: expect.stringMatching(/^too many failed sign-ins for this account; try again in [12] s/),
  retryAfter: expect.stringMatching(/^[12]$/),
};

describe("Login throttling through the RPC", () => {
  it("answers resource_exhausted with retry-after, even for the right password, then lets it in", async () => {
    const email = uniqueEmail("rpc-locked");
    await client.register({ email, password: "the right password" });
    for (let n = 0; n < 3; n++) expect(await login(email, "guess")).toEqual(wrong);
    expect(await login(email, "the right password")).toEqual(throttled);
    await new Promise((resolve) => setTimeout(resolve, 2_100));
    expect(await login(email, "the right password")).toEqual({ code: "ok" });
    // The success reset the count: three failures go through again.
    for (let n = 0; n < 3; n++) expect(await login(email, "guess")).toEqual(wrong);
    expect(await login(email, "guess")).toEqual(throttled);
  });

  it("answers an unknown email exactly the same way", async () => {
    const email = uniqueEmail("rpc-nobody");
    const seen = [];
    for (let n = 0; n < 4; n++) seen.push(await login(email, "guess"));
    expect(seen).toEqual([wrong, wrong, wrong, throttled]);
  });

  it("lets only three of 20 wrong guesses in flight at once be checked", async () => {
    const email = uniqueEmail("rpc-burst");
    await client.register({ email, password: "the right password" });
    const outcomes = await Promise.all(Array.from({ length: 20 }, () => login(email, "guess")));
    const codes = outcomes.map((o) => o.code);
    expect(codes.filter((c) => c === "Unauthenticated")).toHaveLength(3);
    expect(codes.filter((c) => c === "ResourceExhausted")).toHaveLength(17);
  });
});
