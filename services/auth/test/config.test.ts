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
