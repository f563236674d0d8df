/**
 * mesh/local's reading of mesh/istio: every top-level *.yaml (a variant is applied by copying it
 * over its top-level file, as `kubectl apply` would replace the object), parsed with Istio's
 * field names by strict schemas. A field mesh/local does not implement, or a value Istio would
 * reject (destination weights adding up to 0, a bad duration, an unknown subset, a host outside
 * namespace shop), throws MeshConfigError naming the file, the resource and the field: a policy
 * that is written down is either enforced or refused, never silently ignored.
 *
 * Deliberate differences from a cluster: one namespace (shop, plus istio-system for the
 * gateway's EnvoyFilter); no root-namespace policies; EnvoyFilter only in the local-rate-limit
 * shape of Istio's task "Enabling Rate Limits using Envoy"; TLS modes ISTIO_MUTUAL and DISABLE
 * only (every local workload has a sidecar, so Istio's auto-mTLS is ISTIO_MUTUAL).
 */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";
import { z } from "zod";
import { pathTemplateProblem } from "./authz.js";
import { parseIstioDuration } from "./duration.js";
import { workloadOf } from "./match.js";

export class MeshConfigError extends Error {
  override name = "MeshConfigError";
}

const NAMESPACE = "shop";
/** Istio's root namespace: the ingress gateway runs there, so its EnvoyFilter lives there. */
const ROOT_NAMESPACE = "istio-system";

// ---------------------------------------------------------------------------------------------
// Shared pieces

/** An Istio duration ("100ms", "2s", "1h2m3.5s"), kept as written; `durationMs` reads it. */
const duration = z.string().superRefine((text, ctx) => {
  const parsed = parseIstioDuration(text);
  if ("problem" in parsed) ctx.addIssue({ code: "custom", message: parsed.problem });
});

/** Milliseconds of a duration that passed the schema. */
export function durationMs(text: string): number {
  const parsed = parseIstioDuration(text);
  if ("problem" in parsed) throw new MeshConfigError(parsed.problem);
  return parsed.ms;
}

const regex = z.string().superRefine((pattern, ctx) => {
  try {
    new RegExp(pattern);
  } catch (error) {
    ctx.addIssue({ code: "custom", message: `not a valid regex: ${(error as Error).message}` });
  }
});

const stringMatch = z.union([
  z.strictObject({ exact: z.string() }),
  z.strictObject({ prefix: z.string() }),
  z.strictObject({ regex }),
]);
export type StringMatch = z.infer<typeof stringMatch>;

const percent = z.number().min(0).max(100);
const percentage = z.strictObject({ value: percent });

const metadata = z.object({
  name: z.string().min(1),
  namespace: z.literal(NAMESPACE).optional(),
  labels: z.record(z.string(), z.string()).optional(),
  annotations: z.record(z.string(), z.string()).optional(),
});
const labels = z.record(z.string(), z.string());
const selector = z.strictObject({ matchLabels: labels });

const networking = z.enum([
  "networking.istio.io/v1",
  "networking.istio.io/v1beta1",
  "networking.istio.io/v1alpha3",
]);
const security = z.enum(["security.istio.io/v1", "security.istio.io/v1beta1"]);
const telemetry = z.enum(["telemetry.istio.io/v1", "telemetry.istio.io/v1alpha1"]);

// ---------------------------------------------------------------------------------------------
// Gateway

const gatewaySchema = z.strictObject({
  apiVersion: networking,
  kind: z.literal("Gateway"),
  metadata,
  spec: z.strictObject({
    selector: labels,
    servers: z
      .array(
        z.strictObject({
          port: z.strictObject({
            number: z.number().int().min(1).max(65535),
            name: z.string(),
            protocol: z.enum(["HTTP", "HTTP2", "GRPC"]),
          }),
          hosts: z.array(z.string()).min(1),
        }),
      )
      .min(1),
  }),
});
export type Gateway = z.infer<typeof gatewaySchema>;

// ---------------------------------------------------------------------------------------------
// VirtualService

const httpMatch = z.strictObject({
  name: z.string().optional(),
  uri: stringMatch.optional(),
  method: stringMatch.optional(),
  headers: z.record(z.string(), stringMatch).optional(),
});

const destination = z.strictObject({
  host: z.string().min(1),
  subset: z.string().min(1).optional(),
  port: z.strictObject({ number: z.number().int().min(1).max(65535) }).optional(),
});

/** Envoy's retry_on tokens mesh/local implements (see retry.ts); numbers are status codes. */
export const RETRY_ON_TOKENS = [
  "5xx",
  "gateway-error",
  "reset",
  "connect-failure",
  "refused-stream",
  "retriable-4xx",
  "retriable-status-codes",
  "cancelled",
  "deadline-exceeded",
  "internal",
  "resource-exhausted",
  "unavailable",
] as const;

// Go's http.StatusText: Istio's validateHTTPRetry accepts a bare number only if Go names it.
const GO_STATUS_CODES = new Set([
  100, 101, 102, 103, 200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301, 302, 303, 304,
  305, 307, 308, 400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415,
  416, 417, 418, 421, 422, 423, 424, 425, 426, 428, 429, 431, 451, 500, 501, 502, 503, 504, 505,
  506, 507, 508, 510, 511,
]);

// As Istio validates it: split on "," and nothing trimmed, so "5xx, reset" or an empty token
// is refused.
const retryOn = z.string().superRefine((text, ctx) => {
  for (const token of text.split(",")) {
    if (/^\d+$/.test(token)) {
      if (!GO_STATUS_CODES.has(+token)) {
        ctx.addIssue({ code: "custom", message: `${token} is not an HTTP status code` });
      }
    } else if (!(RETRY_ON_TOKENS as readonly string[]).includes(token)) {
      ctx.addIssue({
        code: "custom",
        message: `retry condition "${token}": not implemented by mesh/local (implemented: ${RETRY_ON_TOKENS.join(", ")} and status codes)`,
      });
    }
  }
});

const httpRetry = z
  .strictObject({
    attempts: z.number().int().min(0),
    perTryTimeout: duration.optional(),
    retryOn: retryOn.optional(),
    /** Envoy's base interval of the jittered backoff (default 25ms). */
    backoff: duration.optional(),
  })
  .refine((r) => r.attempts > 0 || (r.perTryTimeout === undefined && !r.retryOn), {
    message: "http retry policy configured when attempts are set to 0 (disabled)",
  });
export type HttpRetry = z.infer<typeof httpRetry>;

const httpFault = z
  .strictObject({
    delay: z.strictObject({ fixedDelay: duration, percentage: percentage.optional() }).optional(),
    abort: z
      .strictObject({
        httpStatus: z.number().int().min(200).max(599),
        percentage: percentage.optional(),
      })
      .optional(),
  })
  .refine((f) => f.delay || f.abort, { message: "a fault needs a delay or an abort" });
export type HttpFault = z.infer<typeof httpFault>;

const httpRoute = z.strictObject({
  name: z.string().optional(),
  match: z.array(httpMatch).optional(),
  route: z
    // Relative weights, as Envoy's WeightedCluster: Istio 1.30 refuses only a negative one.
    .array(z.strictObject({ destination, weight: z.number().int().min(0).optional() }))
    .min(1),
  timeout: duration.optional(),
  retries: httpRetry.optional(),
  fault: httpFault.optional(),
});
export type HttpRoute = z.infer<typeof httpRoute>;

const virtualServiceSchema = z.strictObject({
  apiVersion: networking,
  kind: z.literal("VirtualService"),
  metadata,
  spec: z.strictObject({
    hosts: z.array(z.string().min(1)).min(1),
    gateways: z.array(z.string().min(1)).min(1).optional(),
    http: z.array(httpRoute).min(1),
  }),
});
export type VirtualService = z.infer<typeof virtualServiceSchema>;

// ---------------------------------------------------------------------------------------------
// DestinationRule

const trafficPolicySchema = z.strictObject({
  // Every hop between mesh/local's proxies is mutual TLS; another mode would be ignored.
  tls: z
    .strictObject({
      mode: z.literal("ISTIO_MUTUAL", {
        error: "not implemented by mesh/local: only ISTIO_MUTUAL (every hop is mutual TLS)",
      }),
    })
    .optional(),
  loadBalancer: z
    .strictObject({ simple: z.enum(["ROUND_ROBIN", "LEAST_REQUEST", "RANDOM"]) })
    .optional(),
  connectionPool: z
    .strictObject({
      tcp: z
        .strictObject({
          maxConnections: z.number().int().min(1).optional(),
          connectTimeout: duration.optional(),
          idleTimeout: duration.optional(),
        })
        .optional(),
      http: z
        .strictObject({
          http1MaxPendingRequests: z.number().int().min(1).optional(),
          http2MaxRequests: z.number().int().min(1).optional(),
          maxRequestsPerConnection: z.number().int().min(0).optional(),
          maxRetries: z.number().int().min(0).optional(),
          idleTimeout: duration.optional(),
        })
        .optional(),
    })
    .optional(),
  outlierDetection: z
    .strictObject({
      consecutive5xxErrors: z.number().int().min(0).optional(),
      consecutiveGatewayErrors: z.number().int().min(0).optional(),
      splitExternalLocalOriginErrors: z.boolean().optional(),
      consecutiveLocalOriginFailures: z.number().int().min(0).optional(),
      interval: duration.optional(),
      baseEjectionTime: duration.optional(),
      maxEjectionPercent: z.number().int().min(0).max(100).optional(),
    })
    .optional(),
});
export type TrafficPolicySpec = z.infer<typeof trafficPolicySchema>;

const destinationRuleSchema = z.strictObject({
  apiVersion: networking,
  kind: z.literal("DestinationRule"),
  metadata,
  spec: z.strictObject({
    host: z.string().min(1),
    trafficPolicy: trafficPolicySchema.optional(),
    subsets: z
      .array(
        z.strictObject({
          name: z.string().min(1),
          labels: labels,
          trafficPolicy: trafficPolicySchema.optional(),
        }),
      )
      .optional(),
  }),
});
export type DestinationRule = z.infer<typeof destinationRuleSchema>;

// ---------------------------------------------------------------------------------------------
// PeerAuthentication, AuthorizationPolicy, RequestAuthentication

const peerAuthenticationSchema = z.strictObject({
  apiVersion: security,
  kind: z.literal("PeerAuthentication"),
  metadata,
  spec: z.strictObject({
    selector: selector.optional(),
    mtls: z.strictObject({ mode: z.enum(["UNSET", "STRICT", "PERMISSIVE", "DISABLE"]) }).optional(),
  }),
});
export type PeerAuthentication = z.infer<typeof peerAuthenticationSchema>;

const values = z.array(z.string().min(1)).min(1);
/** paths/notPaths: `{*}`/`{**}` templates as Istio validates them and Envoy parses them. */
const pathValues = values.superRefine((paths, ctx) => {
  for (const [index, path] of paths.entries()) {
    const problem = pathTemplateProblem(path);
    if (problem) ctx.addIssue({ code: "custom", message: problem, path: [index] });
  }
});

/** The `when` keys mesh/local evaluates (authz.ts); IP- and SNI-based ones are refused. */
const conditionKey = z
  .string()
  .regex(
    /^(request\.headers\[[^\]]+\]|source\.namespace|source\.principal|request\.auth\.principal|request\.auth\.audiences|request\.auth\.presenter|request\.auth\.claims(\[[^\]]+\])+|destination\.port)$/,
    "condition key not implemented by mesh/local (implemented: request.headers[…], source.namespace, source.principal, request.auth.principal, request.auth.audiences, request.auth.presenter, request.auth.claims[…], destination.port)",
  );

const authorizationRule = z.strictObject({
  from: z
    .array(
      z.strictObject({
        source: z
          .strictObject({
            principals: values.optional(),
            notPrincipals: values.optional(),
            requestPrincipals: values.optional(),
            notRequestPrincipals: values.optional(),
            namespaces: values.optional(),
            notNamespaces: values.optional(),
          })
          // Istio: an entry without a source (or an operation, below) is any.
          .optional(),
      }),
    )
    .optional(),
  to: z
    .array(
      z.strictObject({
        operation: z
          .strictObject({
            hosts: values.optional(),
            notHosts: values.optional(),
            ports: z.array(z.string().regex(/^\d+$/, "a port number")).min(1).optional(),
            notPorts: z.array(z.string().regex(/^\d+$/, "a port number")).min(1).optional(),
            methods: values.optional(),
            notMethods: values.optional(),
            paths: pathValues.optional(),
            notPaths: pathValues.optional(),
          })
          .optional(),
      }),
    )
    .optional(),
  when: z
    .array(
      z
        .strictObject({
          key: conditionKey,
          values: values.optional(),
          notValues: values.optional(),
        })
        .refine((c) => c.values || c.notValues, {
          message: "a condition needs values or notValues",
        }),
    )
    .optional(),
});
export type AuthorizationRule = z.infer<typeof authorizationRule>;

const authorizationPolicySchema = z
  .strictObject({
    apiVersion: security,
    kind: z.literal("AuthorizationPolicy"),
    metadata,
    spec: z.strictObject({
      selector: selector.optional(),
      action: z
        .enum(["ALLOW", "DENY"], {
          message: "only ALLOW and DENY are implemented by mesh/local (not CUSTOM, AUDIT)",
        })
        .optional(),
      rules: z.array(authorizationRule).optional(),
    }),
  })
  .superRefine((policy, ctx) => {
    // Istio reads the annotation with strconv.ParseBool; a dry-run policy is only logged (shadow
    // rules), which mesh/local does not do: enforcing it would deny what a cluster allows.
    const dryRun = policy.metadata.annotations?.["istio.io/dry-run"];
    if (dryRun !== undefined && ["1", "t", "T", "TRUE", "true", "True"].includes(dryRun)) {
      ctx.addIssue({
        code: "custom",
        path: ["metadata", "annotations", "istio.io/dry-run"],
        message: "dry-run (shadow) policies are not implemented by mesh/local",
      });
    }
  });
export type AuthorizationPolicy = z.infer<typeof authorizationPolicySchema>;

const jwtRule = z
  .strictObject({
    issuer: z.string().min(1),
    audiences: z.array(z.string().min(1)).optional(),
    jwksUri: z.url({ protocol: /^https?$/ }).optional(),
    jwks: z.string().min(1).optional(),
    fromHeaders: z
      .array(z.strictObject({ name: z.string().min(1), prefix: z.string().optional() }))
      .min(1)
      .optional(),
    fromParams: z.array(z.string().min(1)).min(1).optional(),
    forwardOriginalToken: z.boolean().optional(),
  })
  .refine((r) => (r.jwksUri ? 1 : 0) + (r.jwks ? 1 : 0) === 1, {
    message:
      "exactly one of jwksUri and jwks (OpenID discovery from the issuer is not implemented by mesh/local)",
  });
export type JwtRule = z.infer<typeof jwtRule>;

const requestAuthenticationSchema = z.strictObject({
  apiVersion: security,
  kind: z.literal("RequestAuthentication"),
  metadata,
  spec: z.strictObject({ selector: selector.optional(), jwtRules: z.array(jwtRule).min(1) }),
});
export type RequestAuthentication = z.infer<typeof requestAuthenticationSchema>;

// ---------------------------------------------------------------------------------------------
// Telemetry (tracing only)

/**
 * The mesh's default trace sampling, where no Telemetry sets one (the ingress gateway, in
 * istio-system, always): mesh/istio/install/istio-operator.yaml's `values.pilot.traceSampling`
 * (Istio's own default is 1 %; on a laptop every request is traced).
 */
export const MESH_TRACE_SAMPLING_PERCENT = 100;

const telemetrySchema = z.strictObject({
  apiVersion: telemetry,
  kind: z.literal("Telemetry"),
  metadata,
  spec: z.strictObject({
    tracing: z
      .array(
        z.strictObject({
          providers: z.array(z.strictObject({ name: z.string().min(1) })).min(1),
          randomSamplingPercentage: percent.optional(),
        }),
      )
      .length(1, "mesh/local implements one tracing entry"),
  }),
});

// ---------------------------------------------------------------------------------------------
// EnvoyFilter: only the local rate limit of Istio's task "Enabling Rate Limits using Envoy"

const LOCAL_RATE_LIMIT_FILTER = "envoy.filters.http.local_ratelimit";
const LOCAL_RATE_LIMIT_TYPE =
  "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit";
const TYPED_STRUCT = [
  "type.googleapis.com/udpa.type.v1.TypedStruct",
  "type.googleapis.com/xds.type.v3.TypedStruct",
] as const;

/** Protobuf JSON durations, as an EnvoyFilter's Envoy config takes them: "10s", "0.5s". */
const protoDuration = z
  .string()
  .regex(/^\d+(\.\d{1,9})?s$/, 'a protobuf duration in seconds ("10s", "0.5s")');
const protoDurationMs = (text: string) => Math.round(Number(text.slice(0, -1)) * 1000);

const tokenBucket = z.strictObject({
  max_tokens: z.number().int().min(1),
  tokens_per_fill: z.number().int().min(1).optional(),
  // Envoy's local rate limit refuses fill intervals under 50ms.
  fill_interval: protoDuration.refine((d) => protoDurationMs(d) >= 50, "at least 50ms"),
});

const runtimeFraction = z.strictObject({
  runtime_key: z.string().min(1),
  default_value: z.strictObject({
    numerator: z.number().int().min(0),
    denominator: z.enum(["HUNDRED", "TEN_THOUSAND", "MILLION"]).optional(),
  }),
});

const headerValueOption = z.strictObject({
  header: z.strictObject({ key: z.string().min(1), value: z.string() }),
  append: z.boolean().optional(),
  append_action: z
    .enum(["APPEND_IF_EXISTS_OR_ADD", "ADD_IF_ABSENT", "OVERWRITE_IF_EXISTS_OR_ADD"])
    .optional(),
});

const localRateLimitConfig = z.strictObject({
  stat_prefix: z.string().min(1),
  status: z.strictObject({ code: z.number().int().min(400).max(599) }).optional(),
  token_bucket: tokenBucket.optional(),
  filter_enabled: runtimeFraction.optional(),
  filter_enforced: runtimeFraction.optional(),
  response_headers_to_add: z.array(headerValueOption).optional(),
  descriptors: z
    .array(
      z.strictObject({
        entries: z
          .array(z.strictObject({ key: z.string().min(1), value: z.string().optional() }))
          .min(1),
        token_bucket: tokenBucket,
      }),
    )
    .optional(),
  always_consume_default_token_bucket: z.boolean().optional(),
  max_dynamic_descriptors: z.number().int().min(1).optional(),
});

const typedLocalRateLimit = z.union([
  z.strictObject({
    "@type": z.enum(TYPED_STRUCT),
    type_url: z.literal(LOCAL_RATE_LIMIT_TYPE),
    value: localRateLimitConfig,
  }),
  localRateLimitConfig.extend({ "@type": z.literal(LOCAL_RATE_LIMIT_TYPE) }),
]);
const unwrapTyped = (typed: z.infer<typeof typedLocalRateLimit>) => {
  if ("type_url" in typed) return typed.value;
  const { "@type": _type, ...config } = typed;
  return config;
};

const rateLimitAction = z.union([
  z.strictObject({ remote_address: z.strictObject({}) }),
  z.strictObject({
    generic_key: z.strictObject({
      descriptor_value: z.string().min(1),
      descriptor_key: z.string().min(1).optional(),
    }),
  }),
  z.strictObject({
    request_headers: z.strictObject({
      header_name: z.string().min(1),
      descriptor_key: z.string().min(1),
      skip_if_absent: z.boolean().optional(),
    }),
  }),
  z.strictObject({
    header_value_match: z.strictObject({
      descriptor_value: z.string().min(1),
      descriptor_key: z.string().min(1).optional(),
      expect_match: z.boolean().optional(),
      headers: z
        .array(
          z.strictObject({
            name: z.string().min(1),
            string_match: z.union([
              z.strictObject({ exact: z.string() }),
              z.strictObject({ prefix: z.string() }),
              z.strictObject({ suffix: z.string() }),
            ]),
          }),
        )
        .min(1),
    }),
  }),
]);
export type RateLimitAction = z.infer<typeof rateLimitAction>;

const patchContext = z.enum(["GATEWAY", "SIDECAR_INBOUND", "SIDECAR_OUTBOUND"]);

const httpFilterPatch = z.strictObject({
  applyTo: z.literal("HTTP_FILTER"),
  match: z.strictObject({
    context: patchContext,
    listener: z.strictObject({
      portNumber: z.number().int().optional(),
      filterChain: z.strictObject({
        filter: z.strictObject({
          name: z.literal("envoy.filters.network.http_connection_manager"),
          subFilter: z.strictObject({ name: z.literal("envoy.filters.http.router") }).optional(),
        }),
      }),
    }),
  }),
  patch: z.strictObject({
    operation: z.enum(["INSERT_BEFORE", "INSERT_FIRST"]),
    value: z.strictObject({
      name: z.literal(LOCAL_RATE_LIMIT_FILTER),
      typed_config: typedLocalRateLimit,
    }),
  }),
});

const httpRoutePatch = z.strictObject({
  applyTo: z.literal("HTTP_ROUTE"),
  match: z.strictObject({
    context: patchContext,
    routeConfiguration: z.strictObject({
      portNumber: z.number().int().optional(),
      vhost: z.strictObject({
        name: z.string().optional(),
        route: z.strictObject({
          name: z.string().min(1),
          action: z.enum(["ANY", "ROUTE"]).optional(),
        }),
      }),
    }),
  }),
  patch: z.strictObject({
    operation: z.literal("MERGE"),
    value: z.strictObject({
      route: z
        .strictObject({
          rate_limits: z.array(z.strictObject({ actions: z.array(rateLimitAction).min(1) })).min(1),
        })
        .optional(),
      typed_per_filter_config: z.strictObject({ [LOCAL_RATE_LIMIT_FILTER]: typedLocalRateLimit }),
    }),
  }),
});

const envoyFilterSchema = z.strictObject({
  apiVersion: z.literal("networking.istio.io/v1alpha3"),
  kind: z.literal("EnvoyFilter"),
  metadata: metadata.extend({ namespace: z.enum([NAMESPACE, ROOT_NAMESPACE]).optional() }),
  spec: z.strictObject({
    workloadSelector: z.strictObject({ labels }),
    // One shape: an HTTP_FILTER patch inserting envoy.filters.http.local_ratelimit, then one
    // HTTP_ROUTE patch per limited route.
    configPatches: z.tuple([httpFilterPatch, httpRoutePatch], httpRoutePatch),
  }),
});

export interface TokenBucket {
  maxTokens: number;
  tokensPerFill: number;
  fillIntervalMs: number;
}

/** One route's local rate limit, as Envoy's local_ratelimit filter would hold it. */
export interface LocalRateLimit {
  /** EnvoyFilter name, for messages and stats. */
  name: string;
  workloadLabels: Record<string, string>;
  context: "GATEWAY" | "SIDECAR_INBOUND" | "SIDECAR_OUTBOUND";
  /** The route (HTTPRoute name) whose requests are limited. */
  routeName: string;
  statPrefix: string;
  /** Status of a limited answer (Envoy's default 429). */
  status: number;
  tokenBucket: TokenBucket | undefined;
  /** filter_enabled / filter_enforced as percentages (Envoy's default when unset: 0). */
  enabledPercent: number;
  enforcedPercent: number;
  responseHeadersToAdd: { name: string; value: string }[];
  descriptors: { entries: { key: string; value?: string }[]; tokenBucket: TokenBucket }[];
  /** The route's rate_limits: each produces one request descriptor from its actions. */
  rateLimits: RateLimitAction[][];
  alwaysConsumeDefaultTokenBucket: boolean;
  maxDynamicDescriptors: number;
}

// ---------------------------------------------------------------------------------------------
// Reading and parsing

export interface Resource {
  apiVersion?: unknown;
  kind?: unknown;
  metadata?: { name?: unknown; namespace?: unknown };
  spec?: { gateways?: unknown };
  file: string;
}

/** Every YAML document in the top level of a mesh/istio directory (variants/ is not read). */
export function readResources(dir: string): Resource[] {
  return readdirSync(dir)
    .filter((f) => /\.ya?ml$/.test(f))
    .sort()
    .flatMap((file) => parseResources(readFileSync(join(dir, file), "utf8"), file));
}

/** The YAML documents of one file's text; `file` names it in messages. */
export function parseResources(text: string, file: string): Resource[] {
  const resources: Resource[] = [];
  for (const document of parseAllDocuments(text)) {
    if (document.errors.length) {
      throw new MeshConfigError(`${file}: ${document.errors[0]?.message}`);
    }
    const value = document.toJS() as Omit<Resource, "file"> | null;
    if (value) resources.push({ ...value, file });
  }
  return resources;
}

/**
 * The resources with a variant applied as `kubectl apply -f variants/<file>` would: each of its
 * objects replaces the object of the same kind and name (or is added).
 */
export function applyVariant(resources: Resource[], variant: Resource[]): Resource[] {
  const key = (r: Resource) => `${String(r.kind)}/${String(r.metadata?.name)}`;
  const replaced = new Map(variant.map((r) => [key(r), r]));
  const result = resources.map((r) => replaced.get(key(r)) ?? r);
  const present = new Set(resources.map(key));
  return [...result, ...variant.filter((r) => !present.has(key(r)))];
}

const describe = (resource: Resource) =>
  `${resource.file}: ${String(resource.kind)} ${String(resource.metadata?.name)}`;

function fail(resource: Resource, problem: string): never {
  throw new MeshConfigError(`${describe(resource)}: ${problem}`);
}

function parse<T>(schema: z.ZodType<T>, resource: Resource): T {
  const { file: _file, ...document } = resource;
  const result = schema.safeParse(document);
  if (result.success) return result.data;
  // Unimplemented fields first: they explain the other problems (a missing alternative field).
  const issues = [...result.error.issues].sort(
    (a, b) => Number(b.code === "unrecognized_keys") - Number(a.code === "unrecognized_keys"),
  );
  const problems = issues.map((issue) => {
    const path = issue.path.join(".");
    if (issue.code === "unrecognized_keys") {
      return `${path ? `${path}.` : ""}${issue.keys.join(", ")}: not implemented by mesh/local`;
    }
    return `${path}: ${issue.message}`;
  });
  return fail(resource, problems.join("; "));
}

const schemas: Record<string, z.ZodType> = {
  Gateway: gatewaySchema,
  VirtualService: virtualServiceSchema,
  DestinationRule: destinationRuleSchema,
  PeerAuthentication: peerAuthenticationSchema,
  AuthorizationPolicy: authorizationPolicySchema,
  RequestAuthentication: requestAuthenticationSchema,
  Telemetry: telemetrySchema,
  EnvoyFilter: envoyFilterSchema,
};

export interface MeshConfig {
  namespace: "shop";
  gateway: Gateway;
  /** The gateway's VirtualServices' routes, in the order Istio evaluates them. */
  ingressRoutes: HttpRoute[];
  /** VirtualServices for mesh traffic (`gateways` absent or naming `mesh`). */
  virtualServices: VirtualService[];
  destinationRules: DestinationRule[];
  peerAuthentications: PeerAuthentication[];
  authorizationPolicies: AuthorizationPolicy[];
  requestAuthentications: RequestAuthentication[];
  rateLimits: LocalRateLimit[];
  /**
   * How often a proxy of namespace shop that starts a trace samples it: a Telemetry's
   * randomSamplingPercentage, else the mesh's default (MESH_TRACE_SAMPLING_PERCENT).
   */
  tracing: { samplingPercentage: number };
  /** The files read, for "reloaded" messages. */
  files: string[];
}

/** Reads and validates every top-level resource of a mesh/istio directory. */
export function loadMeshConfig(dir: string, resources = readResources(dir)): MeshConfig {
  const parsed = new Map<Resource, unknown>();
  for (const resource of resources) {
    const schema = schemas[String(resource.kind)];
    if (!schema) fail(resource, `kind ${String(resource.kind)}: not implemented by mesh/local`);
    parsed.set(resource, parse(schema, resource));
  }
  const ofKind = <T>(kind: string) =>
    resources
      .filter((r) => r.kind === kind)
      .map((resource) => ({ resource, value: parsed.get(resource) as T }));

  const gateways = ofKind<Gateway>("Gateway");
  if (gateways.length !== 1) {
    throw new MeshConfigError(`expected exactly one Gateway in ${dir}, found ${gateways.length}`);
  }
  const gateway = gateways[0]!.value;
  const gatewayName = gateway.metadata.name;
  const namesGateway = (g: string) => g === gatewayName || g === `${NAMESPACE}/${gatewayName}`;

  const destinationRules = ofKind<DestinationRule>("DestinationRule");
  const ruleHosts = new Map<string, DestinationRule>();
  for (const { resource, value } of destinationRules) {
    const host = shopHost(resource, value.spec.host, "spec.host");
    if (ruleHosts.has(host)) fail(resource, `spec.host: a second DestinationRule for ${host}`);
    ruleHosts.set(host, value);
    const names = (value.spec.subsets ?? []).map((s) => s.name);
    const twice = names.find((n, i) => names.indexOf(n) !== i);
    if (twice) fail(resource, `spec.subsets: subset ${twice} is defined twice`);
  }

  const ingressRoutes: HttpRoute[] = [];
  const virtualServices: VirtualService[] = [];
  const meshHosts = new Set<string>();
  for (const { resource, value } of ofKind<VirtualService>("VirtualService")) {
    const gatewaysOf = value.spec.gateways ?? ["mesh"];
    const unknown = gatewaysOf.find((g) => g !== "mesh" && !namesGateway(g));
    if (unknown) fail(resource, `spec.gateways: no Gateway named ${unknown}`);
    value.spec.http.forEach((route, r) => {
      checkWeights(resource, route, `spec.http.${r}`);
      route.route.forEach(({ destination }, d) => {
        const where = `spec.http.${r}.route.${d}.destination`;
        const host = shopHost(resource, destination.host, `${where}.host`);
        if (destination.subset) {
          const rule = ruleHosts.get(host);
          if (!rule?.spec.subsets?.some((s) => s.name === destination.subset)) {
            fail(
              resource,
              `${where}.subset: unknown subset ${destination.subset} of ${host} (no DestinationRule defines it)`,
            );
          }
        }
      });
    });
    if (gatewaysOf.some(namesGateway)) ingressRoutes.push(...value.spec.http);
    if (gatewaysOf.includes("mesh")) {
      value.spec.hosts.forEach((h, i) => {
        const host = shopHost(resource, h, `spec.hosts.${i}`);
        if (meshHosts.has(host))
          fail(resource, `spec.hosts.${i}: a second VirtualService for ${host}`);
        meshHosts.add(host);
      });
      virtualServices.push(value);
    }
  }
  if (ingressRoutes.length === 0) {
    throw new MeshConfigError(`no VirtualService is bound to Gateway ${gatewayName}`);
  }

  const telemetries = ofKind<z.infer<typeof telemetrySchema>>("Telemetry");
  if (telemetries.length > 1)
    fail(telemetries[1]!.resource, "a second Telemetry for namespace shop");
  const tracingEntry = telemetries[0]?.value.spec.tracing[0];

  const ingressRouteNames = new Set(ingressRoutes.map((r) => r.name).filter(Boolean));
  const rateLimits = ofKind<z.infer<typeof envoyFilterSchema>>("EnvoyFilter").flatMap(
    ({ resource, value }) => localRateLimits(resource, value, gateway, ingressRouteNames),
  );

  return {
    namespace: NAMESPACE,
    gateway,
    ingressRoutes,
    virtualServices,
    destinationRules: destinationRules.map((d) => d.value),
    peerAuthentications: ofKind<PeerAuthentication>("PeerAuthentication").map((p) => p.value),
    authorizationPolicies: ofKind<AuthorizationPolicy>("AuthorizationPolicy").map((p) => p.value),
    requestAuthentications: ofKind<RequestAuthentication>("RequestAuthentication").map(
      (r) => r.value,
    ),
    rateLimits,
    tracing: {
      samplingPercentage: tracingEntry?.randomSamplingPercentage ?? MESH_TRACE_SAMPLING_PERCENT,
    },
    files: [...new Set(resources.map((r) => r.file))],
  };
}

/** The short name of a host in namespace shop, or a MeshConfigError naming the field. */
function shopHost(resource: Resource, host: string, field: string): string {
  const name = workloadOf(host, NAMESPACE);
  if (!name || name.includes("*")) {
    fail(resource, `${field}: host ${host} is outside namespace ${NAMESPACE}`);
  }
  return name;
}

// Istio 1.30's validateHTTPRouteDestinations: several destinations need a total above 0 (mesh/check
// keeps the house rule of 100); one destination takes every request whatever its weight.
function checkWeights(resource: Resource, route: HttpRoute, field: string) {
  if (route.route.length < 2) return;
  const total = route.route.reduce((sum, r) => sum + (r.weight ?? 0), 0);
  if (total === 0) {
    fail(resource, `${field}: route ${route.name ?? "(unnamed)"}: total destination weight = 0`);
  }
}

const fractionPercent = (fraction: z.infer<typeof runtimeFraction> | undefined) => {
  if (!fraction) return 0;
  const { numerator, denominator = "HUNDRED" } = fraction.default_value;
  const scale = { HUNDRED: 1, TEN_THOUSAND: 100, MILLION: 10_000 }[denominator];
  return Math.min(100, numerator / scale);
};

const bucketOf = (bucket: z.infer<typeof tokenBucket>): TokenBucket => ({
  maxTokens: bucket.max_tokens,
  tokensPerFill: bucket.tokens_per_fill ?? 1,
  fillIntervalMs: protoDurationMs(bucket.fill_interval),
});

function localRateLimits(
  resource: Resource,
  filter: z.infer<typeof envoyFilterSchema>,
  gateway: Gateway,
  ingressRouteNames: Set<string | undefined>,
): LocalRateLimit[] {
  const [insert, ...routes] = filter.spec.configPatches;
  const labels = filter.spec.workloadSelector.labels;
  const context = insert.match.context;
  if (context !== "GATEWAY") {
    fail(resource, "spec.configPatches.0.match.context: only GATEWAY is implemented by mesh/local");
  }
  const selectsGateway = Object.entries(labels).every(([k, v]) => gateway.spec.selector[k] === v);
  if (!selectsGateway) {
    fail(resource, "spec.workloadSelector.labels: does not select the Gateway's workload");
  }
  if (filter.metadata.namespace !== ROOT_NAMESPACE) {
    fail(
      resource,
      `metadata.namespace: an EnvoyFilter for the ingress gateway must be in ${ROOT_NAMESPACE}, where the gateway runs`,
    );
  }
  const listenerLevel = unwrapTyped(insert.patch.value.typed_config);
  const extra = Object.keys(listenerLevel).filter((k) => k !== "stat_prefix");
  if (extra.length) {
    fail(
      resource,
      `spec.configPatches.0.patch.value.typed_config: ${extra.join(", ")}: not implemented by mesh/local at listener level (configure limits per route with an HTTP_ROUTE patch)`,
    );
  }
  return routes.map((patch, i) => {
    const field = `spec.configPatches.${i + 1}`;
    if (patch.match.context !== context)
      fail(resource, `${field}.match.context: must be ${context}`);
    const routeName = patch.match.routeConfiguration.vhost.route.name;
    if (!ingressRouteNames.has(routeName)) {
      fail(
        resource,
        `${field}.match.routeConfiguration.vhost.route.name: no ingress route ${routeName}`,
      );
    }
    const config = unwrapTyped(patch.patch.value.typed_per_filter_config[LOCAL_RATE_LIMIT_FILTER]);
    const rateLimits = (patch.patch.value.route?.rate_limits ?? []).map((r) => r.actions);
    if (config.descriptors?.length && rateLimits.length === 0) {
      fail(
        resource,
        `${field}.patch.value.route.rate_limits: descriptors need rate_limits actions`,
      );
    }
    return {
      name: filter.metadata.name,
      workloadLabels: labels,
      context,
      routeName,
      statPrefix: config.stat_prefix,
      status: config.status?.code ?? 429,
      tokenBucket: config.token_bucket && bucketOf(config.token_bucket),
      enabledPercent: fractionPercent(config.filter_enabled),
      enforcedPercent: fractionPercent(config.filter_enforced),
      responseHeadersToAdd: (config.response_headers_to_add ?? []).map((h) => ({
        name: h.header.key.toLowerCase(),
        value: h.header.value,
      })),
      descriptors: (config.descriptors ?? []).map((d) => ({
        entries: d.entries.map((e) => (e.value ? { key: e.key, value: e.value } : { key: e.key })),
        tokenBucket: bucketOf(d.token_bucket),
      })),
      rateLimits,
      alwaysConsumeDefaultTokenBucket: config.always_consume_default_token_bucket ?? true,
      // Envoy's default size of the LRU of per-value buckets.
      maxDynamicDescriptors: config.max_dynamic_descriptors ?? 20,
    };
  });
}
