import { randomBytes } from "node:crypto";
import { ConfigError, loadConfig } from "@thinmesh/platform";
import { describe, expect, it } from "vitest";
import { authConfigSchema } from "../src/config.js";

const load = (env: Record<string, string>) => loadConfig(authConfigSchema, env);
const problem = (env: Record<string, string>) => {
  try {
    load(env);
  } catch (error) {
    if (error instanceof ConfigError) return error.message;
    throw error;
  }
  throw new Error("expected a configuration error");
};

describe("configuration", () => {
  it("has production defaults", () => {
    const config = load({});
    expect(config.PUBLIC_URL).toBeUndefined();
    expect(config.ADMIN_EMAIL).toBeUndefined();
    expect(config).toMatchObject({
      AUTH_ISSUER: "https://auth.thinmesh.local",
      AUTH_AUDIENCE: "thinmesh",
      AUTH_ACCESS_TOKEN_TTL_SECONDS: 900,
      AUTH_CLOCK_SKEW_SECONDS: 60,
      REFRESH_TOKEN_TTL_SECONDS: 30 * 24 * 3600,
      REFRESH_RETRY_GRACE_SECONDS: 30,
      SIGNING_KEY_CACHE_SECONDS: 30,
    });
  });

  it("wants ADMIN_EMAIL and ADMIN_PASSWORD together, naming the missing one", () => {
    expect(problem({ ADMIN_EMAIL: "root@example.com" })).toMatch(
      /ADMIN_PASSWORD: ADMIN_EMAIL and ADMIN_PASSWORD must be set together/,
    );
    const message = problem({ ADMIN_PASSWORD: "long secret value" });
    expect(message).toMatch(/ADMIN_EMAIL: ADMIN_EMAIL and ADMIN_PASSWORD/);
    expect(message).not.toContain("long secret value");
    expect(
      load({ ADMIN_EMAIL: "root@example.com", ADMIN_PASSWORD: "long secret value" }),
    ).toMatchObject({
      ADMIN_EMAIL: "root@example.com",
    });
  });

  it("throttles failed logins by default, and refuses a memory shorter than the longest lock", () => {
    expect(load({})).toMatchObject({
      LOGIN_FREE_FAILURES: 5,
      LOGIN_FIRST_LOCK_SECONDS: 1,
      LOGIN_MAX_LOCK_SECONDS: 900,
      LOGIN_FAILURE_MEMORY_SECONDS: 3600,
    });
    expect(problem({ LOGIN_MAX_LOCK_SECONDS: "7200" })).toMatch(
      /LOGIN_FAILURE_MEMORY_SECONDS: must be longer than LOGIN_MAX_LOCK_SECONDS \(7200\)/,
    );
    expect(problem({ LOGIN_FIRST_LOCK_SECONDS: "1000" })).toMatch(/LOGIN_FIRST_LOCK_SECONDS:/);
  });

  it("uses the DEV-ONLY KEK only outside production and unless a KEK is required", () => {
    expect(load({}).AUTH_KEY_ENCRYPTION_KEY).toBeUndefined();
    expect(problem({ NODE_ENV: "production" })).toMatch(
      /AUTH_KEY_ENCRYPTION_KEY: required because NODE_ENV is production: .*openssl rand -base64 32/,
    );
    expect(problem({ AUTH_REQUIRE_KEK: "true" })).toMatch(
      /AUTH_KEY_ENCRYPTION_KEY: required because AUTH_REQUIRE_KEK is set/,
    );
    const previous = randomBytes(32).toString("base64");
    expect(problem({ AUTH_KEY_ENCRYPTION_KEY_PREVIOUS: previous })).toMatch(
      /AUTH_KEY_ENCRYPTION_KEY: required because AUTH_KEY_ENCRYPTION_KEY_PREVIOUS is set/,
    );
    const kek = randomBytes(32);
    const config = load({
      NODE_ENV: "production",
      AUTH_REQUIRE_KEK: "true",
      AUTH_KEY_ENCRYPTION_KEY: kek.toString("base64"),
    });
    expect(config.AUTH_KEY_ENCRYPTION_KEY).toEqual(kek);
    // Unpadded base64url (as some secret generators write it) decodes the same.
    expect(
      load({ AUTH_KEY_ENCRYPTION_KEY: kek.toString("base64url") }).AUTH_KEY_ENCRYPTION_KEY,
    ).toEqual(kek);
  });

  it("refuses a KEK that is not 32 bytes of base64, without echoing it", () => {
    for (const bad of [
      "a-secret-but-too-short",
      randomBytes(16).toString("base64"),
      "not base64!",
    ]) {
      const message = problem({ AUTH_KEY_ENCRYPTION_KEY: bad });
      expect(message).toMatch(/AUTH_KEY_ENCRYPTION_KEY: must be 32 random bytes in base64/);
      expect(message).not.toContain(bad);
    }
  });

  it("names the variable of a bad value", () => {
    expect(problem({ AUTH_ACCESS_TOKEN_TTL_SECONDS: "forever" })).toMatch(
      /AUTH_ACCESS_TOKEN_TTL_SECONDS:/,
    );
    expect(problem({ ACCESS_TOKEN_TTL_SECONDS: "600" })).toMatch(
      /ACCESS_TOKEN_TTL_SECONDS: renamed AUTH_ACCESS_TOKEN_TTL_SECONDS/,
    );
    expect(problem({ PUBLIC_URL: "ftp://x" })).toMatch(/PUBLIC_URL:/);
    expect(problem({ ADMIN_EMAIL: "root", ADMIN_PASSWORD: "long secret value" })).toMatch(
      /ADMIN_EMAIL:/,
    );
  });
});
