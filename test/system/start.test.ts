// What the README promises a newcomer: `npm start`, then curl. Runs mesh/local over the built
// services and talks to the ingress with plain HTTP (Connect JSON), as curl would.
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connectPostgres } from "@thinmesh/platform";
import { testPostgresUrl } from "@thinmesh/platform/testing";
import { createRemoteJWKSet, jwtVerify } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { listeningUrls, type Spawned, spawnNode } from "./processes.js";

const serverUrl = await testPostgresUrl();
const prefix = `thinmesh_start_${randomBytes(3).toString("hex")}`;
const dataDir = mkdtempSync(join(tmpdir(), "thinmesh-start-"));
let started: Spawned;
let ingress: string;
let catalogDirect: string;

beforeAll(async () => {
  started = spawnNode(["mesh/local/dist/main.js", "--json"], {
    // Every port from the operating system: the ingress's (0) and the services' own.
    THINMESH_INGRESS_PORT: "0",
    THINMESH_ACCESS_LOG: "off",
    THINMESH_DATA_DIR: dataDir,
    THINMESH_DB_PREFIX: prefix,
    LOG_LEVEL: "warn",
    ...(serverUrl ? { DATABASE_URL: serverUrl } : {}),
  });
  await started.waitFor(/thinmesh is ready/, 90_000);
  const urls = listeningUrls(started.output());
  ingress = urls.ingress;
  catalogDirect = urls.workloads.catalog!;
}, 120_000);

afterAll(async () => {
  if (started && started.child.exitCode === null) {
    started.child.kill("SIGINT");
    await started.exited;
  }
  rmSync(dataDir, { recursive: true, force: true });
  if (serverUrl) {
    const sql = connectPostgres(serverUrl, { max: 1, onnotice: () => {} });
    for (const service of ["auth", "catalog", "order", "payment"]) {
      await sql.unsafe(`drop database if exists "${prefix}_${service}" with (force)`);
    }
    await sql.end();
  }
});

const rpc = async (base: string, path: string, body: unknown, token?: string) => {
  const response = await fetch(`${base}/${path}`, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      ...(token ? { authorization: `Bearer ${token}` } : {}),
    },
    body: JSON.stringify(body),
  });
  // biome-ignore lint/suspicious/noExplicitAny: ad-hoc JSON, read the way a curl user would
  return { status: response.status, body: (await response.json()) as Record<string, any> };
};

describe("npm start", () => {
  it("prints how to call the services", () => {
    expect(started.output()).toContain(`curl -s ${ingress}/shop.auth.v1.AuthService/Register`);
    // Not on the default port: the demo hint says where the shop is.
    expect(started.output()).toContain(`THINMESH_URL=${ingress} npm run demo`);
  });

  it("lets a newcomer register, log in and list products, and the JWKS verifies the token", async () => {
    const email = `ada+${randomBytes(4).toString("hex")}@example.com`;
    const credentials = { email, password: "correct horse battery" };
    const registered = await rpc(ingress, "shop.auth.v1.AuthService/Register", credentials);
    expect(registered.status).toBe(200);
    expect(registered.body.user.email).toBe(email);

    const login = await rpc(ingress, "shop.auth.v1.AuthService/Login", credentials);
    expect(login.status).toBe(200);
    const accessToken: string = login.body.tokens.accessToken;

    const products = await rpc(ingress, "shop.catalog.v1.CatalogService/ListProducts", {});
    expect(products.status).toBe(200);
    expect(products.body.products.length).toBeGreaterThan(0);

    const jwks = createRemoteJWKSet(new URL(`${ingress}/.well-known/jwks.json`));
    const { payload } = await jwtVerify(accessToken, jwks, {
      algorithms: ["ES256"],
      issuer: "https://auth.thinmesh.local",
      audience: "thinmesh",
    });
    expect(payload.sub).toBe(registered.body.user.id);
    expect(payload.roles).toEqual(["customer"]);
  });

  it("provisions the dev admin, whose token may create products", async () => {
    const login = await rpc(ingress, "shop.auth.v1.AuthService/Login", {
      email: "admin@thinmesh.local",
      password: "dev-only-admin-password",
    });
    expect(login.status).toBe(200);
    const sku = `SYS-${randomBytes(3).toString("hex").toUpperCase()}`;
    const created = await rpc(
      ingress,
      "shop.catalog.v1.CatalogService/CreateProduct",
      {
        sku,
        name: "System test mug",
        price: { currencyCode: "EUR", amountMinor: "1299" },
        initialStock: 3,
      },
      login.body.tokens.accessToken,
    );
    expect(created.status).toBe(200);
    expect(created.body.product.sku).toBe(sku);
  });

  it("runs the walkthrough (npm run demo) to a CONFIRMED and a CANCELLED order", async () => {
    const demo = spawnNode(["scripts/demo.js"], { THINMESH_URL: ingress });
    expect(await demo.exited).toBe(0);
    const output = demo.output();
    expect(output).toMatch(/: CONFIRMED, total /);
    expect(output).toMatch(
      /: CANCELLED, total .*\n\s+reason: payment declined: amount exceeds the limit/,
    );
    expect(output).toMatch(/stock of \S+: (\d+) before, \1 after \(restored\)/);
  });

  it("restarts a crashed service on the same port, like a pod", async () => {
    const before = await (await fetch(`${catalogDirect}/readyz`)).json();
    expect(before).toEqual({ status: "ready" });
    const starts = [
      ...started.output().matchAll(/"service":"catalog","msg":"process started","pid":(\d+)/g),
    ];
    const pid = Number(starts.at(-1)?.[1]);
    expect(pid).toBeGreaterThan(0);
    process.kill(pid, "SIGKILL");
    await started.waitFor(/"service":"catalog","msg":"process exited; restarting"/, 10_000);
    const deadline = Date.now() + 30_000;
    let ready = false;
    while (!ready && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 250));
      ready = await fetch(`${catalogDirect}/readyz`).then(
        (r) => r.ok,
        () => false,
      );
    }
    expect(ready).toBe(true);
  });

  it("stops everything on Ctrl-C", async () => {
    started.child.kill("SIGINT");
    expect(await started.exited).toBe(0);
    await expect(fetch(`${ingress}/.well-known/jwks.json`)).rejects.toThrow();
  });
});
