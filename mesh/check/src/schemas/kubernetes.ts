import { createRequire } from "node:module";
import { join } from "node:path";
import ts from "typescript";
import type { Finding } from "../findings.js";
import { describe, type K8sObject, repoRoot } from "../objects.js";

/**
 * Kubernetes objects are checked against kubernetes-models (Kubernetes 1.32's OpenAPI schema,
 * generated into validators and TypeScript types) in two passes:
 *
 * 1. its validators (ajv, compiled from the OpenAPI schema): required fields, types, formats;
 * 2. the TypeScript compiler, with each object as an object literal of the model's type:
 *    excess-property checks reject unknown fields at any depth (the OpenAPI validators let
 *    them through), which is what `kubectl apply`'s strict field validation does.
 */
const require = createRequire(import.meta.url);

/** The kubernetes-models module of an apiVersion/kind ("apps/v1" + "Deployment"). */
const modelPath = (object: K8sObject) => `kubernetes-models/${object.apiVersion}/${object.kind}`;

export function isKubernetesKind(object: K8sObject): boolean {
  if (typeof object.apiVersion !== "string" || typeof object.kind !== "string") return false;
  if (/\.istio\.io\//.test(object.apiVersion)) return false;
  try {
    require.resolve(modelPath(object));
    return true;
  } catch {
    return false;
  }
}

interface ModelError {
  instancePath?: string;
  message?: string;
  params?: Record<string, unknown>;
}

/** Pass 1: the OpenAPI validators. */
export function validateWithModels(object: K8sObject): Finding[] {
  const where = describe(object);
  let Model: new (data: unknown) => { validate(): void };
  try {
    Model = (require(modelPath(object)) as Record<string, typeof Model>)[object.kind]!;
  } catch {
    return [
      {
        check: "schema",
        object: where,
        message: `no Kubernetes schema for ${object.apiVersion} ${object.kind}`,
      },
    ];
  }
  try {
    new Model(normalise(object)).validate();
    return [];
  } catch (error) {
    const errors = (error as { errors?: ModelError[] }).errors;
    if (!errors?.length) {
      return [{ check: "schema", object: where, message: (error as Error).message }];
    }
    return errors.map((e) => ({
      check: "schema",
      object: where,
      message: `${(e.instancePath ?? "").replace(/^\//, "").replaceAll("/", ".") || "(root)"}: ${e.message}${e.params?.missingProperty ? ` (${String(e.params.missingProperty)})` : ""}`,
    }));
  }
}

/**
 * kustomize wraps long base64 values of Secrets over several lines; the API server's decoder
 * (Go's encoding/base64) skips the newlines, the models' "byte" format does not.
 */
function normalise(object: K8sObject): K8sObject {
  if (object.kind !== "Secret" || typeof object.data !== "object" || object.data === null) {
    return object;
  }
  const data = Object.fromEntries(
    Object.entries(object.data as Record<string, unknown>).map(([key, value]) => [
      key,
      typeof value === "string" ? value.replace(/[\r\n]/g, "") : value,
    ]),
  );
  return { ...object, data };
}

/** Pass 2: unknown fields and types, by type-checking the objects as TypeScript literals. */
export function typecheckObjects(
  objects: K8sObject[],
  extraEnvelopes: K8sObject[] = [],
): Finding[] {
  const fileName = join(repoRoot, "mesh", "check", "__manifests__.ts");
  const lines: string[] = [];
  const spans: { start: number; end: number; object: K8sObject }[] = [];
  const types = new Map<string, string>();
  const typeOf = (object: K8sObject) => {
    const path = modelPath(object);
    let alias = types.get(path);
    if (!alias) {
      alias = `T${types.size}`;
      types.set(path, alias);
      lines.push(`import type { I${object.kind} as ${alias} } from "${path}";`);
    }
    return alias;
  };
  // Istio objects: their metadata must be a Kubernetes ObjectMeta (the spec is the CRD's).
  lines.push(`import type { IConfigMap as Meta } from "kubernetes-models/v1/ConfigMap";`);
  lines.push(
    "type Envelope = { apiVersion: string; kind: string; metadata: NonNullable<Meta['metadata']>; spec?: unknown; status?: unknown };",
  );
  const declare = (object: K8sObject, type: string) => {
    const body = `export const o${spans.length}: ${type} = ${JSON.stringify(object, null, 1)};`;
    const start = lines.length;
    lines.push(...body.split("\n"));
    spans.push({ start, end: lines.length, object });
  };
  for (const object of objects) declare(object, typeOf(object));
  for (const object of extraEnvelopes) declare(object, "Envelope");
  const text = lines.join("\n");

  const options: ts.CompilerOptions = {
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.ESNext,
    moduleResolution: ts.ModuleResolutionKind.Bundler,
    types: [],
    lib: ["lib.es2022.d.ts"],
  };
  const host = ts.createCompilerHost(options);
  const source = ts.createSourceFile(fileName, text, ts.ScriptTarget.ES2022, true);
  const getSourceFile = host.getSourceFile.bind(host);
  host.getSourceFile = (name, languageVersion, ...rest) =>
    name === fileName ? source : getSourceFile(name, languageVersion, ...rest);
  const fileExists = host.fileExists.bind(host);
  host.fileExists = (name) => name === fileName || fileExists(name);
  const program = ts.createProgram({ rootNames: [fileName], options, host });
  const diagnostics = [
    ...program.getSyntacticDiagnostics(source),
    ...program.getSemanticDiagnostics(source),
  ];
  return diagnostics.map((diagnostic) => {
    const message = ts.flattenDiagnosticMessageText(diagnostic.messageText, " ");
    const start = diagnostic.start ?? 0;
    const line = source.getLineAndCharacterOfPosition(start).line;
    const span = spans.find((s) => line >= s.start && line < s.end);
    return {
      check: "schema",
      object: span ? describe(span.object) : undefined,
      message: `${fieldPath(source, start) || "(root)"}: ${simplify(message)}`,
    };
  });
}

/** Shorter type names in compiler messages: IIoK8sApiCoreV1Container → Container. */
const simplify = (message: string) =>
  message.replace(/\bIIoK8s\w*?V\d+(?:alpha\d+|beta\d+)?(?=[A-Z])/g, "");

/** The JSON path (spec.template.spec.containers[0].foo) of the literal at a position. */
function fieldPath(source: ts.SourceFile, position: number): string {
  let node: ts.Node = source;
  for (;;) {
    const child: ts.Node | undefined = node
      .getChildren(source)
      .find((c) => c.getStart(source) <= position && position < c.getEnd());
    if (!child) break;
    node = child;
  }
  const parts: string[] = [];
  for (let current: ts.Node | undefined = node; current; current = current.parent) {
    const parent: ts.Node | undefined = current.parent;
    if (ts.isPropertyAssignment(current)) {
      const name = current.name;
      parts.unshift(ts.isStringLiteral(name) || ts.isIdentifier(name) ? name.text : name.getText());
    } else if (parent && ts.isArrayLiteralExpression(parent)) {
      parts.unshift(`[${parent.elements.indexOf(current as ts.Expression)}]`);
    }
    if (ts.isVariableDeclaration(current)) break;
  }
  return parts.join(".").replaceAll(".[", "[");
}
