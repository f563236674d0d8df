import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { request as httpRequest } from "node:http";
import http2 from "node:http2";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { Instance } from "../src/sidecar/instances.js";
import { principalOf } from "../src/sidecar/instances.js";
import { type Sidecars, startSidecars } from "../src/sidecar/mesh.js";
import { type AccessRecord, createTelemetry } from "../src/sidecar/telemetry.js";

/**
 * The sidecars through real sockets: fake apps (HTTP/2 servers on the instances' Unix sockets)
 * behind real inbound listeners (mTLS from a local CA), called through a caller's real outbound
 * listener, configured from a directory of Istio resources that the tests edit live.
 */
interface Behaviour {
  status?: number;
  delayMs?: number;
}
interface FakeApp {
  calls: { path: string; headers: http2.IncomingHttpHeaders }[];
  behaviour: (path: string) => Behaviour;
  server: http2.Http2Server;
}

const meshDir = mkdtempSync(join(tmpdir(), "mesh-sidecars-"));
const work = mkdtempSync(join(tmpdir(), "mesh-sidecars-run-"));
const fixture = new URL("./fixtures/sidecars/", import.meta.url).pathname;
const records: AccessRecord[] = [];
const configEvents: ({ ok: true } | { ok: false; message: string })[] = [];

function instance(deployment: string, app: string, version: string, n = 0): Instance {
  return {
    id: `${deployment}-${n}`,
    app,
    deployment,
    version,
    labels: { app, version },
    namespace: "shop",
    serviceAccount: app,
    principal: principalOf("shop", app),
  };
}
const instances = [
  instance("order", "order", "v1"),
  instance("auth", "auth", "v1"),
  instance("catalog", "catalog", "v1", 0),
  instance("catalog", "catalog", "v1", 1),
  instance("payment", "payment", "v1"),
  instance("payment-v2", "payment", "v2"),
];
const apps = new Map<string, FakeApp>();
let mesh: Sidecars;

function startApp(id: string, socket: string): Promise<FakeApp> {
  const app: FakeApp = { calls: [], behaviour: () => ({}), server: http2.createServer() };
  app.server.on("stream", (stream, headers) => {
    const path = String(headers[":path"]);
    app.calls.push({ path, headers });
    const { status = 200, delayMs = 0 } = app.behaviour(path);
    const answer = () => {
      if (stream.destroyed) return;
      stream.respond({ ":status": status, "content-type": "application/json" });
      stream.end(JSON.stringify({ instance: id }));
    };
    stream.on("error", () => {});
    if (delayMs) setTimeout(answer, delayMs);
    else answer();
  });
  return new Promise((resolve) => app.server.listen(socket, () => resolve(app)));
}

function writeMesh(edit?: (text: string) => string) {
  const text = readFileSync(join(fixture, "mesh.yaml"), "utf8");
  writeFileSync(join(meshDir, "mesh.yaml"), edit ? edit(text) : text);
}

/** Waits until a pushed configuration has been loaded (or refused). */
async function pushed(edit: (text: string) => string) {
  const before = configEvents.length;
  writeMesh(edit);
  const deadline = Date.now() + 2_000;
  while (configEvents.length === before) {
    if (Date.now() > deadline) throw new Error("the edit took no effect within 2 s");
    await new Promise((r) => setTimeout(r, 20));
  }
  return configEvents.at(-1)!;
}

const call = (from: string, service: string, path: string, init: RequestInit = {}) =>
  fetch(`${mesh.sidecars.get(from)!.outboundUrls[service]}${path}`, { method: "POST", ...init });

beforeAll(async () => {
  cpSync(fixture, meshDir, { recursive: true });
  const telemetry = createTelemetry({ namespace: "shop", onRecord: (r) => records.push(r) });
  mesh = await startSidecars({
    meshDir,
    caDir: join(work, "ca"),
    socketDir: work,
    instances,
    telemetry,
    onConfig: (event) => configEvents.push(event),
  });
  for (const [id, sidecar] of mesh.sidecars) {
    apps.set(id, await startApp(id, sidecar.appSocket));
    mesh.endpoints.setReady(id, true);
  }
});

afterAll(async () => {
  await mesh?.close();
  for (const app of apps.values()) app.server.close();
  rmSync(meshDir, { recursive: true, force: true });
  rmSync(work, { recursive: true, force: true });
});

beforeEach(async () => {
  for (const app of apps.values()) {
    app.calls.length = 0;
    app.behaviour = () => ({});
  }
  records.length = 0;
});

describe("identity and mTLS", () => {
  it("serves a caller named in the policy, telling the app who called", async () => {
    const response = await call("order-0", "catalog", "/test.Echo/Hello");
    expect(response.status).toBe(200);
    const seen = [...apps.get("catalog-0")!.calls, ...apps.get("catalog-1")!.calls];
    expect(seen).toHaveLength(1);
    expect(String(seen[0]!.headers["x-forwarded-client-cert"])).toContain(
      "URI=spiffe://cluster.local/ns/shop/sa/order",
    );
  });

  it("refuses a caller the policy does not name: 403 RBAC: access denied", async () => {
    const response = await call("auth-0", "catalog", "/test.Echo/Hello");
    expect(response.status).toBe(403);
    expect(await response.text()).toBe("RBAC: access denied");
    expect(apps.get("catalog-0")!.calls).toHaveLength(0);
    expect(apps.get("catalog-1")!.calls).toHaveLength(0);
  });

  it("answers a gRPC caller's denial as Envoy does: trailers-only, grpc-status 7 PERMISSION_DENIED", async () => {
    const session = http2.connect(mesh.sidecars.get("auth-0")!.outboundUrls.catalog!);
    try {
      const answer = await new Promise<{ headers: http2.IncomingHttpHeaders; ended: boolean }>(
        (resolve, reject) => {
          const stream = session.request({
            ":method": "POST",
            ":path": "/test.Echo/Hello",
            "content-type": "application/grpc",
            te: "trailers",
          });
          stream.on("error", reject);
          stream.on("response", (headers, flags) =>
            resolve({ headers, ended: (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0 }),
          );
          stream.end(Buffer.alloc(5));
        },
      );
      expect(answer.headers).toMatchObject({
        ":status": 200,
        "content-type": "application/grpc",
        "grpc-status": "7",
        "grpc-message": "RBAC: access denied",
      });
      expect(answer.ended).toBe(true); // the headers end the stream: no body, no trailers
    } finally {
      session.close();
    }
    expect(records.find((r) => r.reporter === "destination")).toMatchObject({
      response_code: 200,
      grpc_status: "7",
      response_code_details: expect.stringMatching(/^rbac_access_denied_matched_policy/),
    });
  });

  it("refuses plaintext under STRICT at the connection, before any HTTP", async () => {
    const port = mesh.sidecars.get("catalog-0")!.inboundPort;
    await expect(
      fetch(`http://127.0.0.1:${port}/test.Echo/Hello`, { method: "POST" }),
    ).rejects.toThrow();
    expect(apps.get("catalog-0")!.calls).toHaveLength(0);
  });

  it("accepts plaintext under PERMISSIVE, where the policies still want an identity", async () => {
    const event = await pushed((text) => text.replace("mode: STRICT", "mode: PERMISSIVE"));
    expect(event.ok).toBe(true);
    try {
      const port = mesh.sidecars.get("catalog-0")!.inboundPort;
      const response = await fetch(`http://127.0.0.1:${port}/test.Echo/Hello`, { method: "POST" });
      expect(response.status).toBe(403);
    } finally {
      await pushed((text) => text);
    }
  });

  it("hosts match the authority the client sent: case-insensitive, its port not stripped", async () => {
    const event = await pushed((text) =>
      text
        .replace("mode: STRICT", "mode: PERMISSIVE")
        .replace(
          "              - /test.Echo/*\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: payment",
          "              - /test.Echo/*\n    - to: [{ operation: { hosts: [catalog.shop.svc.cluster.local:8080] } }]\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: payment",
        ),
    );
    expect(event.ok).toBe(true);
    try {
      const port = mesh.sidecars.get("catalog-0")!.inboundPort;
      const status = (host: string) =>
        new Promise<number>((resolve, reject) => {
          const req = httpRequest(
            { port, host: "127.0.0.1", method: "POST", path: "/x", headers: { host } },
            (res) => {
              res.resume();
              resolve(res.statusCode ?? 0);
            },
          );
          req.on("error", reject);
          req.end();
        });
      expect(await status("Catalog.shop.svc.cluster.local:8080")).toBe(200);
      expect(await status("catalog.shop.svc.cluster.local")).toBe(403);
      expect(apps.get("catalog-0")!.calls[0]?.headers[":authority"]).toBe(
        "Catalog.shop.svc.cluster.local:8080",
      );
    } finally {
      await pushed((text) => text);
    }
  });
});

describe("request authentication", () => {
  it("removes a verified token from where it was read, nothing else (forwardOriginalToken false)", async () => {
    const { privateKey, publicKey } = await generateKeyPair("ES256", { extractable: true });
    const jwks = JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: "k1" }] });
    const token = await new SignJWT({ iss: "https://issuer.test", sub: "u1" })
      .setProtectedHeader({ alg: "ES256", kid: "k1" })
      .sign(privateKey);
    const event = await pushed(
      (text) =>
        `${text}\n---\napiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: { name: catalog, namespace: shop }\nspec:\n  selector: { matchLabels: { app: catalog } }\n  jwtRules:\n    - issuer: https://issuer.test\n      jwks: '${jwks}'\n`,
    );
    expect(event.ok).toBe(true);
    try {
      const seen = () => [...apps.get("catalog-0")!.calls, ...apps.get("catalog-1")!.calls];
      const byParam = await call(
        "order-0",
        "catalog",
        `/test.Echo/Hello?a=1&access_token=${token}`,
        {
          headers: { authorization: "Basic dXNlcjpwdw==" },
        },
      );
      expect(byParam.status).toBe(200);
      expect(seen()[0]).toMatchObject({ path: "/test.Echo/Hello?a=1" });
      expect(seen()[0]!.headers.authorization).toBe("Basic dXNlcjpwdw==");
      const byHeader = await call("order-0", "catalog", "/test.Echo/Hello?access_token=x", {
        headers: { authorization: `Bearer ${token}` },
      });
      expect(byHeader.status).toBe(401); // access_token=x is a token too, and not a valid one
      const bearer = await call("order-0", "catalog", "/test.Echo/Hello?keep=1", {
        headers: { authorization: `Bearer ${token}` },
      });
      expect(bearer.status).toBe(200);
      expect(seen()[1]).toMatchObject({ path: "/test.Echo/Hello?keep=1" });
      expect(seen()[1]!.headers.authorization).toBeUndefined();
    } finally {
      await pushed((text) => text);
    }
  });
});

describe("retries, timeouts and faults", () => {
  it("a retry masks a failing instance, and the attempt is counted upstream", async () => {
    apps.get("catalog-0")!.behaviour = () => ({ status: 503 });
    for (let i = 0; i < 2; i++) {
      const response = await call("order-0", "catalog", "/test.Echo/Hello");
      expect(response.status).toBe(200);
      expect(await response.json()).toEqual({ instance: "catalog-1" });
    }
    const retried = records.filter((r) => r.reporter === "source" && r.attempts === 2);
    expect(retried.length).toBeGreaterThanOrEqual(1);
    const counts = apps.get("catalog-1")!.calls.map((c) => c.headers["x-envoy-attempt-count"]);
    expect(counts).toContain("2");
  });

  it("a per-try timeout is retried on another instance", async () => {
    apps.get("catalog-0")!.behaviour = () => ({ delayMs: 1_500 });
    apps.get("catalog-1")!.behaviour = () => ({ delayMs: 1_500 });
    let firstSlow = true;
    // The first instance tried is slow, the next one fast.
    for (const app of [apps.get("catalog-0")!, apps.get("catalog-1")!]) {
      app.behaviour = () => {
        if (firstSlow) {
          firstSlow = false;
          return { delayMs: 1_500 };
        }
        return {};
      };
    }
    const started = performance.now();
    const response = await call("order-0", "catalog", "/test.Echo/Hello");
    expect(response.status).toBe(200);
    expect(performance.now() - started).toBeLessThan(1_400);
    const record = records.find((r) => r.reporter === "source")!;
    expect(record.attempts).toBe(2);
  });

  it("the route timeout answers 504 UT, covering every attempt", async () => {
    for (const id of ["catalog-0", "catalog-1"])
      apps.get(id)!.behaviour = () => ({ delayMs: 3_000 });
    const started = performance.now();
    const response = await call("order-0", "catalog", "/test.Echo/Slow");
    const elapsed = performance.now() - started;
    expect(response.status).toBe(504);
    expect(await response.text()).toBe("upstream request timeout");
    expect(elapsed).toBeGreaterThanOrEqual(950);
    expect(elapsed).toBeLessThan(2_500);
    expect(records.find((r) => r.reporter === "source")?.response_flags).toBe("UT");
  });

  it("injects an abort (FI, not retried) and a delay (DI)", async () => {
    const fault = (spec: string) => (text: string) =>
      text.replace("    - name: payment\n", `    - name: payment\n      fault:\n${spec}`);
    await pushed(
      fault(
        "        abort:\n          httpStatus: 418\n          percentage:\n            value: 100\n",
      ),
    );
    const aborted = await call("order-0", "payment", "/test.Echo/Hello");
    expect(aborted.status).toBe(418);
    expect(await aborted.text()).toBe("fault filter abort");
    expect(records.at(-1)?.response_flags).toBe("FI");
    expect(apps.get("payment-0")!.calls.length + apps.get("payment-v2-0")!.calls.length).toBe(0);

    await pushed(
      fault(
        "        delay:\n          fixedDelay: 300ms\n          percentage:\n            value: 100\n",
      ),
    );
    const started = performance.now();
    const delayed = await call("order-0", "payment", "/test.Echo/Hello");
    expect(delayed.status).toBe(200);
    expect(performance.now() - started).toBeGreaterThanOrEqual(290);
    expect(records.at(-1)?.response_flags).toBe("DI");
    await pushed((text) => text);
  });
});

describe("retry flags and abandoned requests", () => {
  it("per-try timeouts that use up the retries answer 504 with flags URX,UT, in Envoy's order", async () => {
    // A policy of its own: a fresh cluster, and no ejection on the timeouts.
    await pushed((text) => text.replace("consecutive5xxErrors: 3", "consecutive5xxErrors: 0"));
    for (const id of ["catalog-0", "catalog-1"])
      apps.get(id)!.behaviour = () => ({ delayMs: 1_500 });
    const response = await call("order-0", "catalog", "/test.Echo/Hello");
    expect(response.status).toBe(504);
    expect(await response.text()).toBe("upstream request timeout");
    // Envoy's local replies carry no x-request-id (Istio sets no always_set_request_id_in_response).
    expect(response.headers.get("x-request-id")).toBeNull();
    expect(records.find((r) => r.reporter === "source")).toMatchObject({
      attempts: 3,
      response_flags: "URX,UT",
      response_code_details: "upstream_per_try_timeout",
    });
    await pushed((text) => text);
  });

  it("a retry skipped because maxRetries are all in use relays the answer with flag UO", async () => {
    await pushed((text) =>
      text.replace(
        "      simple: ROUND_ROBIN\n",
        "      simple: ROUND_ROBIN\n    connectionPool:\n      http:\n        maxRetries: 1\n",
      ),
    );
    // The two first tries answer 503 at once; the one retry allowed takes its time.
    let calls = 0;
    for (const id of ["catalog-0", "catalog-1"])
      apps.get(id)!.behaviour = () => (++calls <= 2 ? { status: 503 } : { delayMs: 150 });
    const responses = await Promise.all([
      call("order-0", "catalog", "/test.Echo/Hello"),
      call("order-0", "catalog", "/test.Echo/Hello"),
    ]);
    expect(responses.map((r) => r.status).sort()).toEqual([200, 503]);
    const sources = records.filter((r) => r.reporter === "source");
    expect(sources.find((r) => r.response_code === 503)).toMatchObject({
      attempts: 1,
      response_flags: "UO",
      response_code_details: "via_upstream",
    });
    expect(sources.find((r) => r.response_code === 200)).toMatchObject({ attempts: 2 });
    await pushed((text) => text);
  });

  it("x-envoy-upstream-service-time runs from the whole request to the answer's headers, earlier tries included", async () => {
    let calls = 0;
    // The first try hangs past its 300 ms per-try timeout; the retry answers after 100 ms.
    for (const id of ["catalog-0", "catalog-1"])
      apps.get(id)!.behaviour = () => (++calls === 1 ? { delayMs: 1_500 } : { delayMs: 100 });
    const response = await call("order-0", "catalog", "/test.Echo/Hello");
    expect(response.status).toBe(200);
    await response.text();
    const header = Number(response.headers.get("x-envoy-upstream-service-time"));
    expect(header).toBeGreaterThanOrEqual(400);
    expect(header).toBeLessThan(1_400);
    const record = records.find((r) => r.reporter === "source")!;
    expect(record.attempts).toBe(2);
    expect(record.upstream_service_time).toBe(header);
    const inbound = records.find((r) => r.reporter === "destination" && r.response_code === 200);
    expect(inbound?.upstream_service_time).toBeGreaterThanOrEqual(100);
    expect(inbound?.upstream_service_time).toBeLessThan(header);
  });

  it("the route timeout ends a retry's backoff at once", async () => {
    // A 60 s backoff base: a retry waits [0, 60 s), [0, 120 s); the 1 s route timeout answers.
    await pushed((text) =>
      text
        .replace("      timeout: 5s\n", "      timeout: 1s\n")
        .replace(
          "        perTryTimeout: 300ms\n",
          "        perTryTimeout: 300ms\n        backoff: 60s\n",
        ),
    );
    for (const id of ["catalog-0", "catalog-1"]) apps.get(id)!.behaviour = () => ({ status: 503 });
    const started = performance.now();
    const response = await call("order-0", "catalog", "/test.Echo/Hello");
    expect(response.status).toBe(504);
    expect(performance.now() - started).toBeLessThan(2_500);
    expect(records.find((r) => r.reporter === "source")).toMatchObject({
      response_flags: "UT",
      response_code_details: "upstream_response_timeout",
    });
    await pushed((text) => text);
  });

  it("a client gone during a fault delay sends nothing upstream (DI,DC)", async () => {
    await pushed((text) =>
      text.replace(
        "    - name: payment\n",
        "    - name: payment\n      fault:\n        delay:\n          fixedDelay: 400ms\n          percentage:\n            value: 100\n",
      ),
    );
    await expect(
      call("order-0", "payment", "/test.Echo/Hello", { signal: AbortSignal.timeout(100) }),
    ).rejects.toThrow();
    await new Promise((resolve) => setTimeout(resolve, 600));
    expect(apps.get("payment-0")!.calls.length + apps.get("payment-v2-0")!.calls.length).toBe(0);
    expect(records.find((r) => r.reporter === "source")).toMatchObject({
      response_code: 0,
      response_flags: "DI,DC",
    });
    await pushed((text) => text);
  });
});

describe("traffic split, live configuration", () => {
  it("sends 90/10 over 1,000 requests, and a live edit to 50/50 takes effect without restart", async () => {
    const count = async (n: number) => {
      const seen = { v1: 0, v2: 0 };
      for (let i = 0; i < n; i++) {
        const response = await call("order-0", "payment", "/test.Echo/Hello");
        const { instance: id } = (await response.json()) as { instance: string };
        seen[id === "payment-v2-0" ? "v2" : "v1"]++;
      }
      return seen;
    };
    const split = await count(1_000);
    // Binomial(1000, 0.1): mean 100, sd 9.5; ±4 sd.
    expect(split.v2).toBeGreaterThan(62);
    expect(split.v2).toBeLessThan(138);

    const event = await pushed((text) =>
      text.replace("weight: 90", "weight: 50").replace("weight: 10", "weight: 50"),
    );
    expect(event.ok).toBe(true);
    const after = await count(200);
    expect(after.v2).toBeGreaterThan(60);
    expect(after.v2).toBeLessThan(140);
    await pushed((text) => text);
  });

  it("refuses an edit that does not validate, naming file and field, and keeps the last good one", async () => {
    const event = await pushed((text) => text.replace("weight: 90", "wieght: 90"));
    expect(event.ok).toBe(false);
    expect(!event.ok && event.message).toMatch(/mesh\.yaml.*wieght/);
    const response = await call("order-0", "payment", "/test.Echo/Hello");
    expect(response.status).toBe(200);
    await pushed((text) => text);
  });
});

describe("circuit breaking", () => {
  it("connection-pool overflow answers 503 UO with x-envoy-overloaded, never retried", async () => {
    for (const id of ["payment-0", "payment-v2-0"])
      apps.get(id)!.behaviour = () => ({ delayMs: 400 });
    const responses = await Promise.all(
      Array.from({ length: 6 }, () => call("order-0", "payment", "/test.Echo/Hello")),
    );
    const overloaded = responses.filter((r) => r.status === 503);
    expect(overloaded.length).toBeGreaterThanOrEqual(1);
    expect(overloaded[0]!.headers.get("x-envoy-overloaded")).toBe("true");
    const flagged = records.filter((r) => r.response_flags === "UO");
    expect(flagged.length).toBe(overloaded.length);
    expect(flagged.every((r) => r.attempts === 1)).toBe(true);
  });

  it("requests waiting for a connection beyond http1MaxPendingRequests overflow: 503 UO (maxRequestsPerConnection 1: each request waits for one)", async () => {
    const pool = (settings: string) => (text: string) =>
      text.replace("        http2MaxRequests: 1\n", `        http2MaxRequests: 100\n${settings}`);
    // Every request gets a new connection, so each waits for its TLS handshake.
    await pushed(pool("        http1MaxPendingRequests: 1\n        maxRequestsPerConnection: 1\n"));
    expect((await call("order-0", "payment", "/test.Echo/Hello")).status).toBe(200);
    const statuses = async () =>
      Promise.all(
        Array.from({ length: 4 }, async () => {
          const response = await call("order-0", "payment", "/test.Echo/Hello");
          await response.text();
          return [response.status, response.headers.get("x-envoy-overloaded")] as const;
        }),
      );
    const answers = await statuses();
    expect(answers).toContainEqual([200, null]);
    expect(answers).toContainEqual([503, "true"]);
    const flagged = records.filter((r) => r.response_flags === "UO");
    expect(flagged.length).toBe(answers.filter(([status]) => status === 503).length);
    expect(flagged.every((r) => r.attempts === 1)).toBe(true);

    // One connection for every request: once it is up, nothing waits and nothing overflows.
    await pushed(pool("        http1MaxPendingRequests: 1\n"));
    expect((await call("order-0", "payment", "/test.Echo/Hello")).status).toBe(200);
    expect(await statuses()).toEqual(Array(4).fill([200, null]));
    await pushed((text) => text);
  });

  it("the destination's inbound side applies the DestinationRule's top-level pool too: 503 UO from upstream, as Istio's inbound cluster", async () => {
    // All traffic to v1, whose subset pool lets the caller send 100; payment-0's inbound side
    // keeps the top level's http2MaxRequests: 1.
    const event = await pushed((text) =>
      text
        .replace("          weight: 90\n", "          weight: 100\n")
        .replace("          weight: 10\n", "          weight: 0\n")
        .replace(
          "        http2MaxRequests: 1\n  subsets:\n    - name: v1\n      labels:\n        version: v1\n",
          "        http2MaxRequests: 1\n  subsets:\n    - name: v1\n      labels:\n        version: v1\n      trafficPolicy:\n        connectionPool:\n          http:\n            http2MaxRequests: 100\n",
        ),
    );
    expect(event).toMatchObject({ ok: true });
    apps.get("payment-0")!.behaviour = () => ({ delayMs: 300 });
    const answers = await Promise.all(
      Array.from({ length: 3 }, async () => {
        const response = await call("order-0", "payment", "/test.Echo/Hello");
        await response.text();
        return [response.status, response.headers.get("x-envoy-overloaded")] as const;
      }),
    );
    expect(answers.filter(([status]) => status === 200)).toHaveLength(1);
    expect(
      answers.filter(([status, overloaded]) => status === 503 && overloaded === "true"),
    ).toHaveLength(2);
    expect(apps.get("payment-0")!.calls).toHaveLength(1);
    const inbound = records.filter(
      (r) => r.reporter === "destination" && r.response_flags === "UO",
    );
    expect(inbound).toHaveLength(2);
    expect(inbound[0]).toMatchObject({ destination_workload: "payment", response_code: 503 });
    // The caller relays the upstream's answer: not its own overflow.
    const caller = records.filter((r) => r.reporter === "source" && r.response_code === 503);
    expect(caller.map((r) => r.response_flags)).toEqual(["-", "-"]);
    await pushed((text) => text);
  });

  it("with splitExternalLocalOriginErrors (as mesh/istio), ejects neither an instance answering 503 nor a hung one (its connection is up)", async () => {
    const split = (text: string) =>
      text.replace(
        "consecutive5xxErrors: 3",
        "consecutive5xxErrors: 0\n      splitExternalLocalOriginErrors: true\n      consecutiveLocalOriginFailures: 2",
      );
    await pushed(split);
    // A dependency down behind it: 503 answers, which never eject.
    apps.get("catalog-0")!.behaviour = () => ({ status: 503 });
    apps.get("catalog-1")!.behaviour = () => ({ status: 503 });
    for (let i = 0; i < 10; i++) await call("order-0", "catalog", "/test.Echo/Hello");
    for (const id of ["catalog-0", "catalog-1"]) apps.get(id)!.calls.length = 0;
    apps.get("catalog-1")!.behaviour = () => ({});
    for (let i = 0; i < 4; i++) await call("order-0", "catalog", "/test.Echo/Hello");
    expect(apps.get("catalog-0")!.calls.length).toBeGreaterThan(0);

    // catalog-0 hangs: each request is placed on its live connection first (Envoy's onPoolReady,
    // a local-origin success), so its per-try timeouts never add up to 2 in a row. Only
    // failures to connect do (mesh/local/test/mesh/outlier.test.ts).
    apps.get("catalog-0")!.behaviour = () => ({ delayMs: 1_000 });
    for (let i = 0; i < 6; i++) {
      expect((await call("order-0", "catalog", "/test.Echo/Hello")).status).toBe(200);
    }
    apps.get("catalog-0")!.calls.length = 0;
    for (let i = 0; i < 8; i++) await call("order-0", "catalog", "/test.Echo/Hello");
    expect(apps.get("catalog-0")!.calls.length).toBeGreaterThan(0);
    await pushed((text) => text);
  });

  it("ejects an instance after consecutive 5xx, and answers 503 UH when none is left", async () => {
    // A pushed policy starts the cluster afresh: no ejections left over from other tests.
    await pushed((text) => text.replace("consecutive5xxErrors: 3", "consecutive5xxErrors: 4"));
    apps.get("catalog-0")!.behaviour = () => ({ status: 500 });
    for (let i = 0; i < 10; i++) await call("order-0", "catalog", "/test.Echo/Hello");
    apps.get("catalog-0")!.calls.length = 0;
    for (let i = 0; i < 6; i++) {
      const response = await call("order-0", "catalog", "/test.Echo/Hello");
      expect(response.status).toBe(200);
    }
    // Ejected: no traffic reaches it, not even a first try.
    expect(apps.get("catalog-0")!.calls).toHaveLength(0);

    // With every instance failing and allowed to be ejected, Istio's panic threshold of 0
    // leaves nothing to send to.
    await pushed((text) =>
      text
        .replace("consecutive5xxErrors: 3", "consecutive5xxErrors: 2")
        .replace("maxEjectionPercent: 50", "maxEjectionPercent: 100"),
    );
    for (const id of ["catalog-0", "catalog-1"]) apps.get(id)!.behaviour = () => ({ status: 500 });
    let last: Response | undefined;
    for (let i = 0; i < 8; i++) last = await call("order-0", "catalog", "/test.Echo/Hello");
    expect(last!.status).toBe(503);
    expect(await last!.text()).toBe("no healthy upstream");
    expect(records.at(-1)?.response_flags).toBe("UH");
    await pushed((text) => text);
  });
});

describe("tracing (Telemetry)", () => {
  const traceparentSeen = async (init: RequestInit = {}) => {
    records.length = 0;
    const response = await call("order-0", "payment", "/test.Echo/Hello", init);
    await response.text();
    const seen = [...apps.get("payment-0")!.calls, ...apps.get("payment-v2-0")!.calls];
    for (const app of apps.values()) app.calls.length = 0;
    return String(seen.at(-1)!.headers.traceparent);
  };

  it("gives each proxy a span; a call without a trace starts one, sampled at the Telemetry's randomSamplingPercentage", async () => {
    // No Telemetry: the mesh's default (the install's values.pilot.traceSampling, 100 %).
    expect(await traceparentSeen()).toMatch(/^00-[\da-f]{32}-[\da-f]{16}-01$/);
    await pushed(
      (text) =>
        `${text}\n---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: { name: tracing, namespace: shop }\nspec:\n  tracing:\n    - providers: [{ name: jaeger }]\n      randomSamplingPercentage: 0\n`,
    );
    const unsampled = await traceparentSeen();
    expect(unsampled).toMatch(/^00-[\da-f]{32}-[\da-f]{16}-00$/);
    // The outbound side started it (the root span); the inbound side's span is its child,
    // and the app's work nests under the inbound side's.
    const outbound = records.find((r) => r.reporter === "source")!;
    const inbound = records.find((r) => r.reporter === "destination")!;
    expect(outbound).toMatchObject({ trace_id: unsampled.split("-")[1], parent_span_id: null });
    expect(inbound).toMatchObject({
      trace_id: outbound.trace_id,
      parent_span_id: outbound.span_id,
    });
    expect(unsampled).toBe(`00-${inbound.trace_id}-${inbound.span_id}-00`);
    // A caller's own trace and sampling decision carry on, under the proxies' spans.
    const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    const continued = await traceparentSeen({ headers: { traceparent } });
    expect(records.find((r) => r.reporter === "source")).toMatchObject({
      trace_id: "0af7651916cd43dd8448eb211c80319c",
      parent_span_id: "b7ad6b7169203331",
    });
    expect(continued).toMatch(/^00-0af7651916cd43dd8448eb211c80319c-[\da-f]{16}-01$/);
    await pushed((text) => text);
  });
});
