import { describe, expect, it } from "vitest";
import { mtlsModeFor } from "../../src/mesh/peer-authentication.js";
import { configFrom, repoConfig } from "./support.js";

const workload = (app: string) => ({ namespace: "shop", labels: { app, version: "v1" } });

describe("mtlsModeFor", () => {
  it("is STRICT for every workload in the repository", () => {
    for (const app of ["auth", "catalog", "order", "payment"]) {
      expect(mtlsModeFor(repoConfig(), workload(app))).toBe("STRICT");
    }
  });

  it("defaults to PERMISSIVE; a workload policy wins; UNSET inherits", () => {
    expect(mtlsModeFor(configFrom(""), workload("auth"))).toBe("PERMISSIVE");
    const config = configFrom(`
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: default }
spec: { mtls: { mode: STRICT } }
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: auth }
spec: { selector: { matchLabels: { app: auth } }, mtls: { mode: PERMISSIVE } }
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: order }
spec: { selector: { matchLabels: { app: order } }, mtls: { mode: UNSET } }
`);
    expect(mtlsModeFor(config, workload("auth"))).toBe("PERMISSIVE");
    expect(mtlsModeFor(config, workload("order"))).toBe("STRICT");
    expect(mtlsModeFor(config, workload("catalog"))).toBe("STRICT");
  });

  it("empty matchLabels is namespace-wide (Istio), under a workload policy", () => {
    const config = configFrom(`
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: empty }
spec: { selector: { matchLabels: {} }, mtls: { mode: STRICT } }
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: auth }
spec: { selector: { matchLabels: { app: auth } }, mtls: { mode: DISABLE } }
`);
    expect(mtlsModeFor(config, workload("auth"))).toBe("DISABLE");
    expect(mtlsModeFor(config, workload("order"))).toBe("STRICT");
  });
});
