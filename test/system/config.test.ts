import { describe, expect, it } from "vitest";
import { spawnNode } from "./processes.js";

describe("a service process with bad configuration", () => {
  it("exits with a message naming the variable", async () => {
    const env = { AUTH_JWKS_URL: "", PORT: "not-a-port", DATABASE_URL: "" };
    const catalog = spawnNode(["services/catalog/dist/main.js"], env);
    expect(await catalog.exited).toBe(78);
    expect(catalog.output()).toMatch(/PORT:/);
    expect(catalog.output()).toMatch(/AUTH_JWKS_URL:/);
  });
});
