import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { parse, parseAllDocuments } from "yaml";
import { repoRoot } from "./objects.js";

/**
 * What the repository's own configuration and code declare about the call graph, read as
 * data (nothing is imported or run): the protos, the event subscriptions, which service
 * produces which event, which peer RPCs each service calls, and each RPC's access rule.
 */

export interface ProtoService {
  /** shop.catalog.v1.CatalogService */
  fullName: string;
  /** CatalogService */
  name: string;
  methods: string[];
}

const lowerFirst = (s: string) => s.charAt(0).toLowerCase() + s.slice(1);

function listFiles(dir: string, pattern: RegExp): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, encoding: "utf8" })
    .filter((f) => pattern.test(f))
    .map((f) => join(dir, f))
    .sort();
}

/** Every service of proto/shop/**.proto with its methods. */
export function readProtoServices(root = repoRoot): ProtoService[] {
  const services: ProtoService[] = [];
  for (const file of listFiles(join(root, "proto", "shop"), /\.proto$/)) {
    const text = readFileSync(file, "utf8").replace(/\/\/.*$/gm, "");
    const pkg = /^\s*package\s+([\w.]+)\s*;/m.exec(text)?.[1];
    if (!pkg) continue;
    for (const match of text.matchAll(/\bservice\s+(\w+)\s*\{/g)) {
      // The service body: up to the brace that closes it.
      let depth = 0;
      let end = match.index + match[0].length - 1;
      for (; end < text.length; end++) {
        if (text[end] === "{") depth++;
        if (text[end] === "}" && --depth === 0) break;
      }
      const body = text.slice(match.index, end);
      const methods = [...body.matchAll(/\brpc\s+(\w+)\s*\(/g)].map((m) => m[1]!);
      services.push({ fullName: `${pkg}.${match[1]}`, name: match[1]!, methods });
    }
  }
  return services;
}

export function findProtoService(services: ProtoService[], name: string): ProtoService {
  const found = services.filter((s) => s.name === name || s.fullName === name);
  if (found.length !== 1) {
    throw new Error(
      found.length ? `proto service ${name} is ambiguous` : `no proto service named ${name}`,
    );
  }
  return found[0]!;
}

/** A method by its protoc-gen-es local name (getProducts → GetProducts). */
export function protoMethod(service: ProtoService, localName: string): string {
  const method = service.methods.find((m) => lowerFirst(m) === localName || m === localName);
  if (!method) throw new Error(`${service.fullName} has no method ${localName}`);
  return method;
}

/** config/subscriptions.yaml: event type → consuming services. */
export function readSubscriptions(root = repoRoot): Map<string, string[]> {
  const file = join(root, "config", "subscriptions.yaml");
  const parsed = parse(readFileSync(file, "utf8")) as { subscriptions?: Record<string, string[]> };
  return new Map(Object.entries(parsed?.subscriptions ?? {}));
}

/** config/subscriptions.yaml's `producers`: event type → the service that produces it. */
export function readDeclaredProducers(root = repoRoot): Map<string, string> {
  const file = join(root, "config", "subscriptions.yaml");
  const parsed = parse(readFileSync(file, "utf8")) as { producers?: Record<string, string> };
  return new Map(Object.entries(parsed?.producers ?? {}));
}

export function readSubscriptionsText(root = repoRoot): string {
  return readFileSync(join(root, "config", "subscriptions.yaml"), "utf8");
}

/** The service directories: services/<name>/. */
export function serviceNames(root = repoRoot): string[] {
  const dir = join(root, "services");
  return readdirSync(dir, { withFileTypes: true })
    .filter((d) => d.isDirectory())
    .map((d) => d.name)
    .sort();
}

/**
 * Which service produces each event type. Read from each service's source, where it lists
 * the message schemas it publishes (`export const producedEvents = [PaymentCapturedSchema, …]`,
 * any constant whose name contains "roduce"); an event no service lists falls back to the
 * "// producer → consumer" comment above its message in proto/shop/events/v1/saga.proto.
 */
export function readEventProducers(root = repoRoot): Map<string, string> {
  const producers = new Map<string, string>();
  for (const service of serviceNames(root)) {
    for (const file of listFiles(join(root, "services", service, "src"), /\.ts$/)) {
      const text = readFileSync(file, "utf8");
      for (const match of text.matchAll(/\b\w*[Pp]roduce\w*\s*(?::[^=]+)?=\s*\[([^\]]*)\]/g)) {
        for (const schema of match[1]!.matchAll(/\b(\w+)Schema\b/g)) {
          producers.set(`shop.events.v1.${schema[1]}`, service);
        }
      }
    }
  }
  const saga = join(root, "proto", "shop", "events", "v1", "saga.proto");
  if (existsSync(saga)) {
    const text = readFileSync(saga, "utf8");
    for (const match of text.matchAll(
      /^\/\/\s*(\w+)\s*→[^\n]*\n(?:\/\/[^\n]*\n)*message\s+(\w+)/gm,
    )) {
      const type = `shop.events.v1.${match[2]}`;
      if (!producers.has(type)) producers.set(type, match[1]!);
    }
  }
  return producers;
}

export interface PeerCall {
  caller: string;
  callee: string;
  /** /shop.catalog.v1.CatalogService/GetProducts */
  path: string;
}

/**
 * Used only for a service whose peers.ts is missing: the peer RPCs the design names (order
 * prices orders with catalog's GetProducts). Every other service without a peers.ts calls no
 * peer RPC.
 */
export const fallbackPeerCalls: readonly PeerCall[] = [
  { caller: "order", callee: "catalog", path: "/shop.catalog.v1.CatalogService/GetProducts" },
];

/**
 * The RPCs each service calls on its peers, from services/<name>/src/peers.ts
 * (`export const peers = { catalog: { service: CatalogService, methods: ["getProducts"] } }`),
 * or fallbackPeerCalls for a service without the file.
 */
export function readPeerCalls(services: ProtoService[], root = repoRoot): PeerCall[] {
  const calls: PeerCall[] = [];
  for (const caller of serviceNames(root)) {
    const file = join(root, "services", caller, "src", "peers.ts");
    if (!existsSync(file)) {
      calls.push(...fallbackPeerCalls.filter((c) => c.caller === caller));
      continue;
    }
    const text = readFileSync(file, "utf8");
    const block = /export\s+const\s+peers\s*=\s*\{([\s\S]*?)\}\s*as\s+const/.exec(text)?.[1];
    if (!block) throw new Error(`${file}: no \`export const peers = { … } as const\``);
    for (const peer of block.matchAll(
      /([\w-]+|"[^"]+")\s*:\s*\{\s*service\s*:\s*(\w+)\s*,\s*methods\s*:\s*\[([^\]]*)\]/g,
    )) {
      const callee = peer[1]!.replaceAll('"', "");
      const service = findProtoService(services, peer[2]!);
      for (const method of peer[3]!.matchAll(/["']([\w]+)["']/g)) {
        calls.push({
          caller,
          callee,
          path: `/${service.fullName}/${protoMethod(service, method[1]!)}`,
        });
      }
    }
  }
  return calls;
}

export type Access = "public" | "internal" | "authenticated" | { role: string };

/**
 * Each RPC's access rule as the services declare it (`bind(CatalogService, impl, { listProducts:
 * "public", createProduct: { role: "admin" }, … })` in services/<name>/src/*.ts), by path.
 */
export function readAccessRules(services: ProtoService[], root = repoRoot): Map<string, Access> {
  const rules = new Map<string, Access>();
  for (const service of serviceNames(root)) {
    for (const file of listFiles(join(root, "services", service, "src"), /\.ts$/)) {
      const text = readFileSync(file, "utf8");
      for (const call of text.matchAll(/\bbind\(\s*(\w+)\s*,/g)) {
        let proto: ProtoService;
        try {
          proto = findProtoService(services, call[1]!);
        } catch {
          continue;
        }
        const rest = text.slice(call.index);
        for (const rule of rest.matchAll(
          /(\w+)\s*:\s*("public"|"internal"|"authenticated"|\{\s*role\s*:\s*"([^"]+)"\s*\})/g,
        )) {
          const method = proto.methods.find((m) => lowerFirst(m) === rule[1]);
          if (!method) continue;
          const path = `/${proto.fullName}/${method}`;
          if (rules.has(path)) continue;
          rules.set(path, rule[3] ? { role: rule[3] } : (JSON.parse(rule[2]!) as Access));
        }
      }
    }
  }
  return rules;
}

/** Where a manifest is declared: its file (from the repository root) and the namespace it names. */
export interface ManifestSource {
  file: string;
  namespace?: string;
}

/**
 * The manifests kustomize builds from, by "Kind/name": each one's file under mesh/istio or
 * kustomize/ and the namespace it declares there, so that a finding about a rendered object
 * can name the file to change (a rendered object carries no file). mesh/istio/variants
 * (applied by hand) and mesh/istio/install (istioctl's) are not built. The first declaration
 * of a kind and name wins; documents that do not parse are left to the schema checks.
 */
export function readManifestSources(root = repoRoot): Map<string, ManifestSource> {
  const sources = new Map<string, ManifestSource>();
  const files = [
    ...listFiles(join(root, "mesh", "istio"), /^(?!variants\/|install\/).*\.ya?ml$/),
    ...listFiles(join(root, "kustomize"), /\.ya?ml$/),
  ];
  for (const file of files) {
    for (const document of parseAllDocuments(readFileSync(file, "utf8"))) {
      if (document.errors.length) continue;
      const object = document.toJS() as {
        kind?: unknown;
        metadata?: { name?: unknown; namespace?: unknown };
      } | null;
      const name = object?.metadata?.name;
      if (typeof object?.kind !== "string" || typeof name !== "string") continue;
      const key = `${object.kind}/${name}`;
      if (sources.has(key)) continue;
      const namespace = object.metadata?.namespace;
      sources.set(key, {
        file: relative(root, file),
        ...(typeof namespace === "string" ? { namespace } : {}),
      });
    }
  }
  return sources;
}
