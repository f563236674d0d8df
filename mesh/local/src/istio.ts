import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";
import { z } from "zod";

/**
 * The subset of Istio's API that mesh/local implements, with Istio's field names. Schemas are
 * strict: a field mesh/local does not implement stops it with a message naming the resource
 * and the field, instead of being silently ignored (a policy that is written down must be
 * either enforced or refused).
 */
const stringMatch = z.union([
  z.strictObject({ exact: z.string() }),
  z.strictObject({ prefix: z.string() }),
  z.strictObject({ regex: z.string() }),
]);
export type StringMatch = z.infer<typeof stringMatch>;

const httpMatch = z.strictObject({
  name: z.string().optional(),
  uri: stringMatch.optional(),
  method: stringMatch.optional(),
  headers: z.record(z.string(), stringMatch).optional(),
});

const destination = z.strictObject({
  host: z.string().min(1),
  port: z.strictObject({ number: z.number().int().min(1).max(65535) }).optional(),
});

const httpRoute = z.strictObject({
  name: z.string().optional(),
  match: z.array(httpMatch).optional(),
  route: z
    .array(z.strictObject({ destination, weight: z.number().int().min(0).max(100).optional() }))
    .min(1),
});

const metadata = z.object({ name: z.string().min(1), namespace: z.string().optional() });
const apiVersion = z.enum(["networking.istio.io/v1", "networking.istio.io/v1beta1"]);

const gatewaySchema = z.strictObject({
  apiVersion,
  kind: z.literal("Gateway"),
  metadata,
  spec: z.strictObject({
    selector: z.record(z.string(), z.string()),
    servers: z
      .array(
        z.strictObject({
          port: z.strictObject({
            number: z.number().int(),
            name: z.string(),
            protocol: z.enum(["HTTP", "HTTP2", "GRPC"]),
          }),
          hosts: z.array(z.string()).min(1),
        }),
      )
      .min(1),
  }),
});

const virtualServiceSchema = z.strictObject({
  apiVersion,
  kind: z.literal("VirtualService"),
  metadata,
  spec: z.strictObject({
    hosts: z.array(z.string()).min(1),
    gateways: z.array(z.string()).min(1),
    http: z.array(httpRoute).min(1),
  }),
});

export type Gateway = z.infer<typeof gatewaySchema>;
export type VirtualService = z.infer<typeof virtualServiceSchema>;
export type HttpRoute = z.infer<typeof httpRoute>;

export interface IngressConfig {
  gateway: Gateway;
  /** The gateway's VirtualServices' routes, in the order Istio evaluates them. */
  routes: HttpRoute[];
  /** Resources found but not enforced by this step of mesh/local (kind/name). */
  notEnforced: string[];
}

export class MeshConfigError extends Error {
  override name = "MeshConfigError";
}

interface Resource {
  kind?: unknown;
  metadata?: { name?: unknown };
  spec?: { gateways?: unknown };
  file: string;
}

/** Every YAML document in the top level of a mesh/istio directory (variants are applied by hand). */
export function readResources(dir: string): Resource[] {
  const resources: Resource[] = [];
  for (const file of readdirSync(dir)
    .filter((f) => /\.ya?ml$/.test(f))
    .sort()) {
    for (const document of parseAllDocuments(readFileSync(join(dir, file), "utf8"))) {
      if (document.errors.length) {
        throw new MeshConfigError(`${file}: ${document.errors[0]?.message}`);
      }
      const value = document.toJS() as Omit<Resource, "file"> | null;
      if (value) resources.push({ ...value, file });
    }
  }
  return resources;
}

function parse<T>(schema: z.ZodType<T>, resource: Resource): T {
  const { file: _file, ...document } = resource;
  const result = schema.safeParse(document);
  if (result.success) return result.data;
  const problems = result.error.issues.map((issue) => {
    const path = issue.path.join(".");
    return issue.code === "unrecognized_keys"
      ? `${path ? `${path}.` : ""}${issue.keys.join(", ")}: not implemented by mesh/local`
      : `${path}: ${issue.message}`;
  });
  const name = `${String(resource.kind)} ${String(resource.metadata?.name)}`;
  throw new MeshConfigError(`${resource.file}: ${name}: ${problems.join("; ")}`);
}

/**
 * The ingress configuration: the Gateway (there must be exactly one) and the VirtualServices
 * bound to it. Other resources are listed as not enforced by this step.
 */
export function loadIngress(dir: string, resources = readResources(dir)): IngressConfig {
  const gateways = resources.filter((r) => r.kind === "Gateway");
  if (gateways.length !== 1) {
    throw new MeshConfigError(`expected exactly one Gateway in ${dir}, found ${gateways.length}`);
  }
  const gateway = parse(gatewaySchema, gateways[0]!);
  const boundTo = (r: Resource) =>
    Array.isArray(r.spec?.gateways) &&
    r.spec.gateways.some(
      (g) => g === gateway.metadata.name || String(g).endsWith(`/${gateway.metadata.name}`),
    );
  const ingress = resources.filter((r) => r.kind === "VirtualService" && boundTo(r));
  if (ingress.length === 0) {
    throw new MeshConfigError(`no VirtualService is bound to Gateway ${gateway.metadata.name}`);
  }
  const routes = ingress.flatMap((r) => parse(virtualServiceSchema, r).spec.http);
  for (const route of routes) {
    const weights = route.route.map((r) => r.weight ?? (route.route.length === 1 ? 100 : 0));
    const total = weights.reduce((a, b) => a + b, 0);
    if (total !== 100) {
      throw new MeshConfigError(
        `route ${route.name ?? "(unnamed)"}: weights add up to ${total}, not 100`,
      );
    }
  }
  const notEnforced = resources
    .filter((r) => r !== gateways[0] && !ingress.includes(r))
    .map((r) => `${String(r.kind)}/${String(r.metadata?.name)}`);
  return { gateway, routes, notEnforced };
}
