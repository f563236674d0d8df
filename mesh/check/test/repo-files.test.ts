import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { repoRoot } from "../src/index.js";

// skaffold.yaml and the Tiltfile are checked in test/images, next to the images they build.
const at = (...parts: string[]) => join(repoRoot, ...parts);

it("kustomize/base/subscriptions.yaml is a byte-for-byte copy of config/subscriptions.yaml", () => {
  expect(readFileSync(at("kustomize", "base", "subscriptions.yaml"), "utf8")).toBe(
    readFileSync(at("config", "subscriptions.yaml"), "utf8"),
  );
});

describe("the Istio install configuration the policies rely on", () => {
  const installDir = at("mesh", "istio", "install");
  const text = () =>
    readdirSync(installDir, { recursive: true, encoding: "utf8" })
      .filter((f) => /\.ya?ml$/.test(f))
      .map((f) => readFileSync(join(installDir, f), "utf8"))
      .join("\n");

  it("lets the sidecars fetch auth's JWKS (PILOT_JWT_ENABLE_REMOTE_JWKS=envoy)", () => {
    expect(text()).toMatch(/PILOT_JWT_ENABLE_REMOTE_JWKS["']?\s*:\s*["']?envoy/);
  });

  it("declares the tracing provider the Telemetry names (jaeger)", () => {
    expect(text()).toMatch(/extensionProviders:[\s\S]*name:\s*["']?jaeger["']?/);
  });
});
