import type { DescMethod, DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { permissionDenied } from "./errors.js";
import { bearerToken, callerKey, type TokenVerifier } from "./tokens.js";

/**
 * Who may call a method, checked by the service itself (defence in depth; in a cluster Istio's
 * AuthorizationPolicies check the calling workload as well):
 * - "public": anyone, no token needed;
 * - "internal": other services; the mesh restricts which workloads may call it;
 * - "authenticated": any valid access token;
 * - { role }: a valid access token with that role.
 */
export type Access = "public" | "internal" | "authenticated" | { role: string };

/** One access rule per method of a service; the type makes leaving one out an error. */
export type AccessRules<S extends DescService> = { [M in keyof S["method"]]: Access };

/** The path of an RPC on the wire, as Istio's AuthorizationPolicy matches it. */
export const procedurePath = (method: DescMethod) => `/${method.parent.typeName}/${method.name}`;

export function accessByPath<S extends DescService>(
  service: S,
  rules: AccessRules<S>,
): Map<string, Access> {
  const byPath = new Map<string, Access>();
  for (const [localName, method] of Object.entries(service.method) as [string, DescMethod][]) {
    const access = (rules as Record<string, Access | undefined>)[localName];
    if (!access) throw new Error(`no access rule for ${procedurePath(method)}`);
    byPath.set(procedurePath(method), access);
  }
  return byPath;
}

/**
 * Enforces the access rules. A method with no rule is refused, so a new RPC is closed until
 * someone decides who may call it.
 */
export function createAccessInterceptor(
  rules: Map<string, Access>,
  verifier: TokenVerifier | undefined,
): Interceptor {
  return (next) => async (req) => {
    const access = rules.get(procedurePath(req.method));
    if (!access) throw permissionDenied(`no access rule for ${procedurePath(req.method)}`);
    if (access === "public" || access === "internal") return next(req);
    if (!verifier) throw new ConnectError("token verification is not configured", Code.Internal);
    const token = bearerToken(req.header.get("authorization"));
    if (!token) {
      throw new ConnectError(
        "this call needs an access token (Authorization: Bearer ...)",
        Code.Unauthenticated,
      );
    }
    const claims = await verifier.verify(token);
    if (typeof access === "object" && !claims.roles.includes(access.role)) {
      throw permissionDenied(`${req.method.name} requires the "${access.role}" role`);
    }
    req.contextValues.set(callerKey, claims);
    return next(req);
  };
}
