// What the README promises a newcomer: `npm start`, then curl. Runs mesh/local over the built
// services and talks to the ingress with plain HTTP (Connect JSON), as curl would.
import { randomBytes } from "node:crypto";
import { testPostgresUrl } from "@thinmesh/platform/testing";
import { createRemoteJWKSet, jwtVerify } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { npmStart } from "./npm-start.js";
import { listeningUrls, type Spawned, spawnNode } from "./processes.js";

const serverUrl = await testPostgresUrl();
const shops = npmStart("start", serverUrl);
let started: Spawned;
let ingress: string;
let admin: string;

beforeAll(async () => {
  started = shops.start();
  await started.waitFor(/thinmesh is ready/, 90_000);
  ({ ingress, admin } = listeningUrls(started.output()));
}, 120_000);

afterAll(() => shops.stop());

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

  it("restarts a crashed service behind its sidecar, like a pod", async () => {
    // The kubelet's view: mesh/local's admin listener says which endpoints are ready.
    const catalogReady = async () => {
      const endpoints = (await (await fetch(`${admin}/endpoints`)).json()) as {
        id: string;
        ready: boolean;
      }[];
      return endpoints.find((e) => e.id === "catalog-0")?.ready;
    };
    expect(await catalogReady()).toBe(true);
    const starts = [
      ...started.output().matchAll(/"service":"catalog-0","msg":"process started","pid":(\d+)/g),
    ];
    const pid = Number(starts.at(-1)?.[1]);
    expect(pid).toBeGreaterThan(0);
    process.kill(pid, "SIGKILL");
    await started.waitFor(/"service":"catalog-0","msg":"process exited; restarting"/, 10_000);
    const deadline = Date.now() + 30_000;
    let listed = 0;
    while (Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 250));
      const answer = await rpc(ingress, "shop.catalog.v1.CatalogService/ListProducts", {}).catch(
        () => undefined,
      );
      if (answer?.status === 200 && (await catalogReady())) {
        listed = answer.body.products?.length ?? 0;
        break;
      }
    }
    expect(listed).toBeGreaterThan(0);
  });

  it("stops everything on Ctrl-C", async () => {
    started.child.kill("SIGINT");
    expect(await started.exited).toBe(0);
    await expect(fetch(`${ingress}/.well-known/jwks.json`)).rejects.toThrow();
  });
});
