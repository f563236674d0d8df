import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Ajv, type ErrorObject, type ValidateFunction } from "ajv";
import formats from "ajv-formats";
import { parseAllDocuments } from "yaml";
import { parseDuration } from "../../../local/src/mesh/duration.js";
import type { Finding } from "../findings.js";
import { describe, type K8sObject, repoRoot } from "../objects.js";

/**
 * Istio's CustomResourceDefinitions with their openAPIV3Schema, vendored in the repository
 * (mesh/check/schemas/istio-crds.yaml, from an Istio release's crd-all.gen.yaml; refresh with
 * mesh/check/scripts/vendor-istio-crds.js). $THINMESH_ISTIO_CRDS points elsewhere, e.g. at a
 * newer release's full file.
 */
export function istioCrdPath(): string {
  return (
    process.env.THINMESH_ISTIO_CRDS ?? join(repoRoot, "mesh", "check", "schemas", "istio-crds.yaml")
  );
}

type Schema = Record<string, unknown>;

interface Crd {
  spec: {
    group: string;
    names: { kind: string };
    versions: { name: string; served?: boolean; schema?: { openAPIV3Schema?: Schema } }[];
  };
}

/**
 * The CEL rules (x-kubernetes-validations) of Istio's CRDs that the API server would apply,
 * evaluated here in JavaScript. A rule missing from this table fails validation ("not
 * evaluated offline") rather than passing unchecked.
 */
const has = (self: unknown, key: string) =>
  typeof self === "object" && self !== null && (self as Schema)[key] !== undefined;
const count = (self: unknown, ...keys: string[]) => keys.filter((k) => has(self, k)).length;
const size = (self: unknown) =>
  typeof self === "string" || Array.isArray(self)
    ? self.length
    : typeof self === "object" && self !== null
      ? Object.keys(self).length
      : 0;
const normalise = (rule: string) => rule.replace(/\s+/g, " ").trim();

const celRules = new Map<string, (self: unknown) => boolean>(
  Object.entries({
    "duration(self) >= duration('1ms')": (self: unknown) => (parseDuration(self) ?? -1) >= 1e6,
    'self.all(key, !key.contains("*"))': (self: unknown) =>
      Object.keys(self as Schema).every((k) => !k.includes("*")),
    "self.all(key, key.size() != 0)": (self: unknown) =>
      Object.keys(self as Schema).every((k) => k.length > 0),
    '!self.contains("*")': (self: unknown) => !String(self).includes("*"),
    "(has(self.selector) ? 1 : 0) + (has(self.targetRef) ? 1 : 0) + (has(self.targetRefs) ? 1 : 0) <= 1":
      (self: unknown) => count(self, "selector", "targetRef", "targetRefs") <= 1,
    "(has(self.serviceAccounts) || has(self.notServiceAccounts)) ? (!has(self.principals) && !has(self.notPrincipals) && !has(self.namespaces) && !has(self.notNamespaces)) : true":
      (self: unknown) =>
        !(has(self, "serviceAccounts") || has(self, "notServiceAccounts")) ||
        count(self, "principals", "notPrincipals", "namespaces", "notNamespaces") === 0,
    "self.size() == 0": (self: unknown) => size(self) === 0,
    "has(self.portLevelMtls) ? (((has(self.selector) && has(self.selector.matchLabels)) ? self.selector.matchLabels : {}).size() > 0) : true":
      (self: unknown) => {
        if (!has(self, "portLevelMtls")) return true;
        const selector = (self as Schema).selector as Schema | undefined;
        return size(selector?.matchLabels ?? {}) > 0;
      },
    "self.all(key, 0 < int(key) && int(key) <= 65535)": (self: unknown) =>
      Object.keys(self as Schema).every((k) => /^\d+$/.test(k) && +k > 0 && +k <= 65535),
    "(has(self.jwksUri) ? 1 : 0) + (has(self.jwks_uri) ? 1 : 0) + (has(self.jwks) ? 1 : 0) <= 1": (
      self: unknown,
    ) => count(self, "jwksUri", "jwks_uri", "jwks") <= 1,
    'url(self).getScheme() in ["http", "https"]': (self: unknown) =>
      /^https?:\/\/[^/]/.test(String(self)),
    '((has(self.operation) ? self.operation : "") == "UPSERT") ? (self.value != "") : true': (
      self: unknown,
    ) => (self as Schema).operation !== "UPSERT" || ((self as Schema).value ?? "") !== "",
    '((has(self.operation) ? self.operation : "") == "REMOVE") ? !has(self.value) : true': (
      self: unknown,
    ) => (self as Schema).operation !== "REMOVE" || !has(self, "value"),
    // EnvoyFilter (mesh/istio/rate-limit.yaml).
    "(has(self.workloadSelector) ? 1 : 0) + (has(self.targetRefs) ? 1 : 0) <= 1": (self: unknown) =>
      count(self, "workloadSelector", "targetRefs") <= 1,
    'has(self.context) ? ((self.context == "WAYPOINT") ? has(self.waypoint) : !has(self.waypoint)) : !has(self.waypoint)':
      (self: unknown) =>
        (self as Schema).context === "WAYPOINT" ? has(self, "waypoint") : !has(self, "waypoint"),
    "(has(self.tlsCertificates) ? 1 : 0) + (has(self.credentialNames) ? 1 : 0) <= 1": (
      self: unknown,
    ) => count(self, "tlsCertificates", "credentialNames") <= 1,
    "(has(self.credentialName) ? 1 : 0) + (has(self.credentialNames) ? 1 : 0) <= 1": (
      self: unknown,
    ) => count(self, "credentialName", "credentialNames") <= 1,
    "(has(self.credentialNames) ? 1 : 0) + (has(self.tlsCertificates) ? 1 : 0) <= 1": (
      self: unknown,
    ) => count(self, "credentialNames", "tlsCertificates") <= 1,
  }).map(([rule, check]) => [normalise(rule), check]),
);

/**
 * Makes a CRD schema strict the way `kubectl apply` (field validation "Strict") is: an object
 * schema that lists its properties rejects any other property, unless it preserves unknown
 * fields. int-or-string becomes an explicit anyOf.
 */
function strictify(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(strictify);
  if (typeof node !== "object" || node === null) return node;
  const schema: Schema = {};
  for (const [key, value] of Object.entries(node)) {
    schema[key] = key === "x-kubernetes-validations" ? value : strictify(value);
  }
  if (
    schema.properties &&
    schema.additionalProperties === undefined &&
    schema["x-kubernetes-preserve-unknown-fields"] !== true
  ) {
    schema.additionalProperties = false;
  }
  if (schema["x-kubernetes-int-or-string"] === true && schema.type === undefined) {
    schema.anyOf = [{ type: "integer" }, { type: "string" }];
  }
  return schema;
}

export class IstioSchemas {
  private readonly validators = new Map<string, ValidateFunction>();

  constructor(crdText: string) {
    const ajv = new Ajv({ allErrors: true, strict: false });
    // ajv-formats is CommonJS: under NodeNext its default import is the module object.
    const addFormats = (formats as unknown as { default: typeof formats }).default ?? formats;
    (addFormats as unknown as (ajv: Ajv) => void)(ajv);
    ajv.addFormat("int32", {
      type: "number",
      validate: (n: number) => Number.isInteger(n) && n >= -(2 ** 31) && n < 2 ** 31,
    });
    ajv.addFormat("int64", { type: "number", validate: (n: number) => Number.isInteger(n) });
    ajv.addFormat("double", { type: "number", validate: () => true });
    ajv.addKeyword({
      keyword: "x-kubernetes-validations",
      schemaType: "array",
      errors: true,
      validate: function cel(
        this: unknown,
        rules: { rule: string; message?: string }[],
        data: unknown,
      ): boolean {
        const errors: Partial<ErrorObject>[] = [];
        for (const { rule, message } of rules) {
          const check = celRules.get(normalise(rule));
          if (!check) {
            errors.push({ message: `CEL rule not evaluated offline: ${rule}` });
          } else if (!check(data)) {
            errors.push({ message: message ?? `fails ${rule}` });
          }
        }
        (cel as unknown as { errors: Partial<ErrorObject>[] }).errors = errors;
        return errors.length === 0;
      },
    });
    for (const document of parseAllDocuments(crdText)) {
      const crd = document.toJS() as Crd | null;
      if (!crd?.spec?.versions) continue;
      for (const version of crd.spec.versions) {
        const openApi = version.schema?.openAPIV3Schema;
        if (!openApi || version.served === false) continue;
        const apiVersion = `${crd.spec.group}/${version.name}`;
        const root = strictify(openApi) as Schema;
        const schema = {
          type: "object",
          required: ["apiVersion", "kind", "metadata"],
          properties: {
            apiVersion: { const: apiVersion },
            kind: { const: crd.spec.names.kind },
            metadata: { type: "object" },
            ...(root.properties as Schema),
          },
          additionalProperties: false,
        };
        this.validators.set(`${apiVersion}:${crd.spec.names.kind}`, ajv.compile(schema));
      }
    }
  }

  /** Loads the CRDs; a missing file is an error that says where it was looked for. */
  static load(path = istioCrdPath()): IstioSchemas {
    if (!existsSync(path)) {
      throw new Error(
        `Istio CRD schemas not found at ${path}. The manifest checks validate Istio resources ` +
          "against Istio's CRDs: put crd-all.gen.yaml of an Istio release " +
          "(manifests/charts/base/files/crd-all.gen.yaml) there, or set THINMESH_ISTIO_CRDS " +
          "to its path.",
      );
    }
    return new IstioSchemas(readFileSync(path, "utf8"));
  }

  handles(object: K8sObject): boolean {
    return /\.istio\.io\//.test(object.apiVersion ?? "");
  }

  validate(object: K8sObject): Finding[] {
    const validator = this.validators.get(`${object.apiVersion}:${object.kind}`);
    const where = describe(object);
    if (!validator) {
      return [
        {
          check: "schema",
          object: where,
          message: `no Istio CRD serves ${object.apiVersion} ${object.kind}`,
        },
      ];
    }
    if (validator(object)) return [];
    return (validator.errors ?? []).map((error) => ({
      check: "schema",
      object: where,
      message: ajvMessage(error),
    }));
  }
}

function ajvMessage(error: ErrorObject): string {
  const path = error.instancePath.replace(/^\//, "").replaceAll("/", ".") || "(root)";
  if (error.keyword === "additionalProperties") {
    return `${path}: unknown field "${(error.params as { additionalProperty: string }).additionalProperty}"`;
  }
  if (error.keyword === "enum") {
    return `${path}: ${error.message} (${(error.params as { allowedValues: unknown[] }).allowedValues.join(", ")})`;
  }
  return `${path}: ${error.message}`;
}
