import { describe, expect, it } from "vitest";
import {
  type AuthzRequest,
  authorize,
  matchesRequestPrincipal,
  matchesValue,
  pathTemplateProblem,
  pathTemplateRegex,
} from "../../src/mesh/authz.js";
import { configFrom, headers, repoConfig } from "./support.js";

const GATEWAY = "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account";
const sa = (name: string) => `cluster.local/ns/shop/sa/${name}`;
const workload = (app: string) => ({ namespace: "shop", labels: { app, version: "v1" } });
const request = (over: Partial<AuthzRequest> = {}): AuthzRequest => ({
  method: "POST",
  path: "/",
  header: headers(),
  ...over,
});

describe("matchesValue", () => {
  it("exact, prefix*, *suffix and * (present)", () => {
    expect(matchesValue("/a/b", "/a/b")).toBe(true);
    expect(matchesValue("/a/b", "/a/b/")).toBe(false);
    expect(matchesValue("/a/*", "/a/b/c")).toBe(true);
    expect(matchesValue("/a/*", "/b")).toBe(false);
    expect(matchesValue("*/b", "/a/b")).toBe(true);
    expect(matchesValue("*/b", "/a/c")).toBe(false);
    expect(matchesValue("*", "anything")).toBe(true);
    expect(matchesValue("*", undefined)).toBe(false);
    expect(matchesValue("*", "")).toBe(false);
  });
});

describe("matchesRequestPrincipal (Istio's iss/sub split at the last /)", () => {
  const claims = (iss?: unknown, sub?: unknown) => ({
    ...(iss === undefined ? {} : { iss }),
    ...(sub === undefined ? {} : { sub }),
  });
  const m = matchesRequestPrincipal;
  it("* needs a non-empty iss and sub", () => {
    expect(m("*", claims("https://a", "u"))).toBe(true);
    expect(m("*", claims("https://a"))).toBe(false);
    expect(m("*", claims("https://a", ""))).toBe(false);
    expect(m("*", claims("https://a", 7))).toBe(false);
    expect(m("*", undefined)).toBe(false);
  });
  it("iss/* is the exact issuer and any subject; iss/sub exact; a sub with / splits too", () => {
    expect(m("https://a/*", claims("https://a", "u"))).toBe(true);
    expect(m("https://a/*", claims("https://a/x", "u"))).toBe(false);
    expect(m("https://a/*", claims("https://a"))).toBe(false);
    expect(m("https://a/u", claims("https://a", "u"))).toBe(true);
    expect(m("https://a/u", claims("https://a/", "u"))).toBe(false);
    expect(m("https://a/x/y", claims("https://a", "x/y"))).toBe(false);
    expect(m("https://a/x/y", claims("https://a/x", "y"))).toBe(true);
    expect(m("https://a/u*", claims("https://a", "u-1"))).toBe(true);
  });
  it("*suffix and prefix* forms", () => {
    expect(m("*/u", claims("https://a", "u"))).toBe(true);
    expect(m("*a/u", claims("https://a", "u"))).toBe(true);
    expect(m("*b/u", claims("https://a", "u"))).toBe(false);
    expect(m("*-1", claims("https://a", "u-1"))).toBe(true);
    expect(m("https*", claims("https://a", "u"))).toBe(true);
    expect(m("https*", claims("https://a"))).toBe(false);
  });
});

describe("path templates (Envoy's uri_template as Istio generates it)", () => {
  const re = (template: string) => pathTemplateRegex(template);
  it("{*} is exactly one non-empty segment", () => {
    expect(re("/admin/{*}/delete").test("/admin/x/delete")).toBe(true);
    expect(re("/admin/{*}/delete").test("/admin/x/y/delete")).toBe(false);
    expect(re("/admin/{*}/delete").test("/admin//delete")).toBe(false);
    expect(re("/admin/{*}").test("/admin/")).toBe(false);
    expect(re("/admin/{*}").test("/admin/a=b")).toBe(false); // `=` is not a uri_template literal
    expect(re("/a.b/{*}").test("/aXb/c")).toBe(false);
  });
  it("{**} is any run of segments, possibly empty", () => {
    expect(re("/admin/{**}").test("/admin/")).toBe(true);
    expect(re("/admin/{**}").test("/admin/a/b/c")).toBe(true);
    expect(re("/admin/{**}").test("/admin")).toBe(false);
    expect(re("/a/{**}/z").test("/a/b/c/z")).toBe(true);
    expect(re("/a/{**}/z").test("/a//z")).toBe(true);
    expect(re("/a/{**}/z").test("/a/z")).toBe(false);
  });
  it("refused at load as Istio's validation and Envoy's parser refuse them", () => {
    expect(pathTemplateProblem("/a/{**}/{*}")).toMatch(/{\*\*} is not the last operator/);
    expect(pathTemplateProblem("/a/{id}")).toMatch(/beyond a supported path template/);
    expect(pathTemplateProblem("/a/{*}.txt")).toMatch(/beyond a supported path template/);
    expect(pathTemplateProblem("/a/*/{*}")).toMatch(/invalid string literal/);
    expect(pathTemplateProblem("/a=b/{*}")).toMatch(/uri_template refuses/);
    expect(pathTemplateProblem("/a/{*}/{**}")).toBeUndefined();
    expect(pathTemplateProblem("/a/*")).toBeUndefined();
  });
  it("a DENY with a template denies; notPaths with a template", () => {
    const config = configFrom(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-delete }
spec:
  action: DENY
  rules: [{ to: [{ operation: { paths: ["/admin/{*}/delete"] } }] }]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: allow-not-internal }
spec:
  rules: [{ to: [{ operation: { notPaths: ["/internal/{**}"] } }] }]
`);
    const decide = (path: string) => authorize(config, workload("catalog"), request({ path }));
    expect(decide("/admin/x/delete")).toMatchObject({
      allowed: false,
      policy: "ns[shop]-policy[deny-delete]-rule[0]",
    });
    expect(decide("/admin/x/y/delete").allowed).toBe(true);
    expect(decide("/internal/a/b").allowed).toBe(false);
    expect(decide("/internal").allowed).toBe(true);
  });
  it("a bad template and a dry-run policy stop the load, naming file and field", () => {
    const policy = (extra: string, path: string) => `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: p${extra} }
spec:
  action: DENY
  rules: [{ to: [{ operation: { paths: ["${path}"] } }] }]
`;
    expect(() => configFrom(policy("", "/a/{id}"))).toThrow(
      /AuthorizationPolicy p: spec\.rules\.0\.to\.0\.operation\.paths\.0: invalid or unsupported path/,
    );
    expect(() => configFrom(policy(', annotations: { "istio.io/dry-run": "true" }', "/a"))).toThrow(
      /metadata\.annotations\.istio\.io\/dry-run: dry-run \(shadow\) policies are not implemented/,
    );
    expect(() =>
      configFrom(policy(', annotations: { "istio.io/dry-run": "false" }', "/a")),
    ).not.toThrow();
  });
});

describe("mesh/istio/authorization.yaml: who may call what", () => {
  const config = repoConfig();
  const decide = (app: string, over: Partial<AuthzRequest>) =>
    authorize(config, workload(app), request(over));
  const allowed = (app: string, over: Partial<AuthzRequest>) => decide(app, over).allowed;
  const iss = "https://auth.thinmesh.local";
  const token = { claims: { iss, sub: "user-1", roles: ["customer"] } };
  const admin = { claims: { iss, sub: "admin", roles: ["customer", "admin"] } };

  it("lets the gateway reach auth's public RPCs and the JWKS, nothing else", () => {
    for (const method of ["Register", "Login", "Refresh"]) {
      expect(
        allowed("auth", { principal: GATEWAY, path: `/shop.auth.v1.AuthService/${method}` }),
      ).toBe(true);
    }
    expect(
      allowed("auth", { principal: GATEWAY, path: "/.well-known/jwks.json", method: "GET" }),
    ).toBe(true);
    expect(allowed("auth", { principal: GATEWAY, path: "/admin/users" })).toBe(false);
  });

  it("lets the token verifiers GET auth's JWKS, with no other method or path", () => {
    for (const caller of ["catalog", "order", "payment"]) {
      expect(
        allowed("auth", { principal: sa(caller), method: "GET", path: "/.well-known/jwks.json" }),
      ).toBe(true);
      expect(
        allowed("auth", { principal: sa(caller), method: "POST", path: "/.well-known/jwks.json" }),
      ).toBe(false);
      expect(
        allowed("auth", { principal: sa(caller), path: "/shop.auth.v1.AuthService/Login" }),
      ).toBe(false);
    }
  });

  it("catalog: public browsing, admin RPCs with the admin role, GetProducts and events from order only", () => {
    const list = "/shop.catalog.v1.CatalogService/ListProducts";
    const create = "/shop.catalog.v1.CatalogService/CreateProduct";
    expect(allowed("catalog", { principal: GATEWAY, path: list })).toBe(true);
    expect(allowed("catalog", { principal: GATEWAY, path: create })).toBe(false);
    expect(allowed("catalog", { principal: GATEWAY, path: create, ...token })).toBe(false);
    expect(allowed("catalog", { principal: GATEWAY, path: create, ...admin })).toBe(true);
    expect(
      allowed("catalog", {
        principal: sa("order"),
        path: "/shop.catalog.v1.CatalogService/GetProducts",
      }),
    ).toBe(true);
    expect(
      allowed("catalog", {
        principal: GATEWAY,
        path: "/shop.catalog.v1.CatalogService/GetProducts",
      }),
    ).toBe(false);
    expect(
      allowed("catalog", {
        principal: sa("payment"),
        path: "/shop.events.v1.EventSinkService/Deliver",
      }),
    ).toBe(false);
    expect(
      allowed("catalog", {
        principal: sa("order"),
        path: "/shop.events.v1.EventSinkService/Deliver",
      }),
    ).toBe(true);
  });

  it("order: every edge RPC needs a token; events from catalog and payment", () => {
    const place = "/shop.order.v1.OrderService/PlaceOrder";
    expect(allowed("order", { principal: GATEWAY, path: place })).toBe(false);
    expect(allowed("order", { principal: GATEWAY, path: place, ...token })).toBe(true);
    expect(
      allowed("order", {
        principal: sa("catalog"),
        path: "/shop.events.v1.EventSinkService/Deliver",
      }),
    ).toBe(true);
    expect(
      allowed("order", {
        principal: sa("payment"),
        path: "/shop.events.v1.EventSinkService/Deliver",
      }),
    ).toBe(true);
    expect(
      allowed("order", { principal: sa("auth"), path: "/shop.events.v1.EventSinkService/Deliver" }),
    ).toBe(false);
  });

  it("payment: only order's event deliveries; plaintext callers (no principal) are denied", () => {
    const deliver = "/shop.events.v1.EventSinkService/Deliver";
    expect(decide("payment", { principal: sa("order"), path: deliver })).toEqual({
      allowed: true,
      policy: "ns[shop]-policy[payment]-rule[0]",
    });
    expect(
      decide("payment", {
        principal: sa("order"),
        path: "/shop.payment.v1.PaymentService/GetPayment",
      }),
    ).toEqual({
      allowed: false,
      status: 403,
      body: "RBAC: access denied",
    });
    expect(allowed("payment", { path: deliver })).toBe(false);
  });

  it("allow-nothing denies a workload no other policy names", () => {
    expect(allowed("jaeger", { principal: sa("order"), path: "/" })).toBe(false);
  });
});

describe("evaluation order and matchers", () => {
  const config = configFrom(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-admin }
spec:
  action: DENY
  rules:
    - to: [{ operation: { paths: ["/admin/*"] } }]
      when: [{ key: "request.headers[x-debug]", notValues: ["on"] }]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: allow }
spec:
  selector: { matchLabels: { app: catalog } }
  rules:
    - from: [{ source: { namespaces: [shop], notPrincipals: [cluster.local/ns/shop/sa/payment] } }]
      to: [{ operation: { methods: [GET], notPaths: ["*/secret"], hosts: ["catalog.shop.svc.cluster.local"], ports: ["8080"] } }]
    - from: [{ source: { requestPrincipals: ["*"], notRequestPrincipals: ["https://evil/*"] } }]
      to: [{ operation: { notMethods: [DELETE] } }]
      when:
        - { key: "request.auth.claims[groups]", values: ["ops-*"] }
        - { key: "request.auth.claims[org][tier]", values: [gold] }
    - to: [{ operation: { paths: [/by-header] } }]
      when: [{ key: "request.headers[x-team]", values: ["*"] }, { key: source.namespace, values: [shop] }]
    - to: [{ operation: { paths: [/by-audience] } }]
      when: [{ key: request.auth.audiences, values: [thinmesh] }, { key: request.auth.presenter, values: [spa] }, { key: destination.port, values: ["8080"] }]
`);
  const catalog = workload("catalog");
  const allowed = (over: Partial<AuthzRequest>) =>
    authorize(config, catalog, request(over)).allowed;

  it("DENY first, even over a matching ALLOW; notValues matches an absent header", () => {
    expect(
      authorize(
        config,
        catalog,
        request({
          principal: sa("order"),
          method: "GET",
          path: "/admin/x",
          host: "catalog.shop.svc.cluster.local",
          port: 8080,
        }),
      ),
    ).toEqual({
      allowed: false,
      policy: "ns[shop]-policy[deny-admin]-rule[0]",
      status: 403,
      body: "RBAC: access denied",
    });
    expect(
      allowed({
        principal: sa("order"),
        method: "GET",
        path: "/admin/x",
        host: "catalog.shop.svc.cluster.local",
        port: 8080,
        header: headers({ "x-debug": "on" }),
      }),
    ).toBe(true);
  });

  it("no ALLOW policy for a workload: allowed (after DENY)", () => {
    expect(authorize(config, workload("order"), request({ path: "/anything" }))).toEqual({
      allowed: true,
    });
    expect(authorize(config, workload("order"), request({ path: "/admin/x" })).allowed).toBe(false);
  });

  it("sources: namespaces from the principal, notPrincipals; operations: methods, notPaths, hosts (case, port), ports", () => {
    const base = {
      method: "GET",
      path: "/items",
      host: "Catalog.shop.svc.cluster.local",
      port: 8080,
    };
    // Istio's HostMatcher: the authority as sent, no port stripping.
    expect(
      allowed({ ...base, principal: sa("order"), host: "catalog.shop.svc.cluster.local:8080" }),
    ).toBe(false);
    expect(allowed({ ...base, principal: sa("order") })).toBe(true);
    expect(allowed({ ...base, principal: sa("payment") })).toBe(false);
    expect(allowed({ ...base, principal: "cluster.local/ns/other/sa/order" })).toBe(false);
    expect(allowed({ ...base, principal: sa("order"), method: "POST" })).toBe(false);
    expect(allowed({ ...base, principal: sa("order"), path: "/a/secret" })).toBe(false);
    expect(allowed({ ...base, principal: sa("order"), host: "catalog" })).toBe(false);
    expect(allowed({ ...base, principal: sa("order"), port: 9090 })).toBe(false);
  });

  it("requestPrincipals * (any token), claims: array elements and nested claims", () => {
    const claims = {
      iss: "https://auth",
      sub: "u1",
      groups: ["dev", "ops-oncall"],
      org: { tier: "gold" },
    };
    const { iss: _iss, sub: _sub, ...noToken } = claims;
    expect(authorize(config, catalog, request({ claims }))).toEqual({
      allowed: true,
      policy: "ns[shop]-policy[allow]-rule[1]", // Istio's name for the policy's second rule
    });
    expect(allowed({ claims: noToken })).toBe(false);
    expect(allowed({ claims: { ...claims, iss: "https://evil" } })).toBe(false);
    expect(allowed({ claims, method: "DELETE" })).toBe(false);
    expect(allowed({ claims: { ...claims, groups: ["dev"] } })).toBe(false);
    expect(allowed({ claims: { ...claims, org: { tier: "silver" } } })).toBe(false);
  });

  it("when: header presence, source.namespace, audiences, presenter, destination.port", () => {
    expect(
      allowed({ path: "/by-header", principal: sa("order"), header: headers({ "x-team": "a" }) }),
    ).toBe(true);
    expect(allowed({ path: "/by-header", principal: sa("order") })).toBe(false);
    expect(allowed({ path: "/by-header", header: headers({ "x-team": "a" }) })).toBe(false);
    const claims = { aud: ["other", "thinmesh"], azp: "spa" };
    expect(allowed({ path: "/by-audience", claims, port: 8080 })).toBe(true);
    expect(allowed({ path: "/by-audience", claims: { ...claims, aud: "other" }, port: 8080 })).toBe(
      false,
    );
    expect(allowed({ path: "/by-audience", claims, port: 9090 })).toBe(false);
  });

  it("reports the first matching rule by name, as Envoy's engine keeps its policies sorted", () => {
    const two = configFrom(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: b-deny }
spec: { action: DENY, rules: [{ to: [{ operation: { methods: [GET] } }] }] }
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: a-deny }
spec: { action: DENY, rules: [{ to: [{ operation: { methods: [POST] } }] }, {}] }
`);
    expect(authorize(two, catalog, request({ method: "GET" }))).toMatchObject({
      allowed: false,
      policy: "ns[shop]-policy[a-deny]-rule[1]",
    });
  });

  it("from/to entries without source/operation and empty lists are any; header * is present (even empty)", () => {
    const any = configFrom(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: any }
spec:
  rules:
    - { from: [{}], to: [] }
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-debug }
spec:
  action: DENY
  rules: [{ when: [{ key: "request.headers[x-debug]", values: ["*"] }] }]
`);
    expect(authorize(any, catalog, request()).allowed).toBe(true);
    expect(authorize(any, catalog, request({ header: headers({ "x-debug": "" }) }))).toMatchObject({
      allowed: false,
      policy: "ns[shop]-policy[deny-debug]-rule[0]",
    });
  });

  it("request.auth.principal in when splits like requestPrincipals", () => {
    const when = configFrom(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: by-principal }
spec:
  rules:
    - when: [{ key: request.auth.principal, values: ["https://auth/*"] }]
`);
    const ok = (claims: Record<string, unknown>) =>
      authorize(when, catalog, request({ claims })).allowed;
    expect(ok({ iss: "https://auth", sub: "u1" })).toBe(true);
    expect(ok({ iss: "https://auth" })).toBe(false);
    expect(ok({ iss: "https://auth/x", sub: "u1" })).toBe(false);
  });

  it("spec: {} (allow-nothing) allows nothing, and a selector limits a policy to its workloads", () => {
    const nothing = configFrom(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: allow-nothing }
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: all-for-auth }
spec:
  selector: { matchLabels: { app: auth } }
  rules: [{}]
`);
    expect(authorize(nothing, workload("catalog"), request()).allowed).toBe(false);
    expect(authorize(nothing, workload("auth"), request())).toEqual({
      allowed: true,
      policy: "ns[shop]-policy[all-for-auth]-rule[0]",
    });
  });
});
