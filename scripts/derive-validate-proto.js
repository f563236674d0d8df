// Writes proto/buf/validate/validate.proto from the descriptor that ships inside the pinned
// @bufbuild/protovalidate package.
//
// Why: buf.build (where the protovalidate module normally comes from) is not reachable from
// every machine that builds thinmesh, and the npm package ships only generated code, not the
// .proto source. Our contracts need the file at compile time to declare their rules. The
// printed file keeps every message, field, number, oneof and extension of the real one, so the
// options our contracts set are encoded exactly as with the original; field-level options of
// validate.proto itself (its predefined CEL rules) are left out, because at run time the
// validator uses the package's own full descriptor (generated code imports it from
// @bufbuild/protovalidate, see buf.gen.yaml).
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { isFieldSet } from "@bufbuild/protobuf";
import { FieldDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { file_buf_validate_validate as validateFile } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const target = join(root, "proto/buf/validate/validate.proto");
const { version } = JSON.parse(
  readFileSync(join(root, "node_modules/@bufbuild/protovalidate/package.json"), "utf8"),
);

const scalarNames = {
  1: "double",
  2: "float",
  3: "int64",
  4: "uint64",
  5: "int32",
  6: "fixed64",
  7: "fixed32",
  8: "bool",
  9: "string",
  12: "bytes",
  13: "uint32",
  15: "sfixed32",
  16: "sfixed64",
  17: "sint32",
  18: "sint64",
};
const labelNames = { 1: "optional", 2: "required", 3: "repeated" };

function typeOf(field) {
  if (field.typeName) return field.typeName; // fully qualified, starts with "."
  const name = scalarNames[field.type];
  if (!name) throw new Error(`field ${field.name}: unsupported type ${field.type}`);
  return name;
}

function printField(field, indent, withLabel) {
  const label = withLabel ? `${labelNames[field.label]} ` : "";
  return `${indent}${label}${typeOf(field)} ${field.name} = ${field.number};`;
}

function printMessage(message, indent = "") {
  const lines = [`${indent}message ${message.name} {`];
  const inner = `${indent}  `;
  const printedOneofs = new Set();
  for (const field of message.field) {
    const isRealOneof =
      isFieldSet(field, FieldDescriptorProtoSchema.field.oneofIndex) && !field.proto3Optional;
    if (!isRealOneof) {
      lines.push(printField(field, inner, true));
      continue;
    }
    if (printedOneofs.has(field.oneofIndex)) continue;
    printedOneofs.add(field.oneofIndex);
    lines.push(`${inner}oneof ${message.oneofDecl[field.oneofIndex].name} {`);
    for (const member of message.field.filter(
      (f) =>
        isFieldSet(f, FieldDescriptorProtoSchema.field.oneofIndex) &&
        f.oneofIndex === field.oneofIndex,
    )) {
      lines.push(printField(member, `${inner}  `, false));
    }
    lines.push(`${inner}}`);
  }
  for (const nested of message.nestedType) lines.push(...printMessage(nested, inner));
  for (const nested of message.enumType) lines.push(...printEnum(nested, inner));
  for (const range of message.extensionRange) {
    const end = range.end >= 536870912 ? "max" : String(range.end - 1);
    lines.push(`${inner}extensions ${range.start} to ${end};`);
  }
  for (const range of message.reservedRange) {
    const last = range.end - 1;
    lines.push(`${inner}reserved ${range.start === last ? last : `${range.start} to ${last}`};`);
  }
  if (message.reservedName.length > 0) {
    lines.push(`${inner}reserved ${message.reservedName.map((n) => `"${n}"`).join(", ")};`);
  }
  lines.push(`${indent}}`);
  return lines;
}

function printEnum(enumType, indent = "") {
  return [
    `${indent}enum ${enumType.name} {`,
    ...enumType.value.map((v) => `${indent}  ${v.name} = ${v.number};`),
    `${indent}}`,
  ];
}

const proto = validateFile.proto;
if (proto.syntax !== "" && proto.syntax !== "proto2") {
  throw new Error(`validate.proto syntax changed to ${proto.syntax}: update this script`);
}
const out = [
  `// Derived from the descriptor in @bufbuild/protovalidate@${version} by`,
  "// scripts/derive-validate-proto.js (npm run generate). Do not edit.",
  "// Compile-time declaration only: field options of the original are omitted; at run time",
  "// the validator uses the package's own descriptor.",
  'syntax = "proto2";',
  "",
  `package ${proto.package};`,
  "",
  ...proto.dependency.map((d) => `import "${d}";`),
  "",
  `option go_package = "${proto.options.goPackage}";`,
  `option java_multiple_files = true;`,
  `option java_outer_classname = "${proto.options.javaOuterClassname}";`,
  `option java_package = "${proto.options.javaPackage}";`,
  "",
];
const byExtendee = new Map();
for (const ext of proto.extension) {
  const list = byExtendee.get(ext.extendee) ?? [];
  list.push(ext);
  byExtendee.set(ext.extendee, list);
}
for (const [extendee, exts] of byExtendee) {
  out.push(`extend ${extendee} {`, ...exts.map((e) => printField(e, "  ", true)), "}", "");
}
for (const message of proto.messageType) out.push(...printMessage(message), "");
for (const enumType of proto.enumType) out.push(...printEnum(enumType), "");

mkdirSync(dirname(target), { recursive: true });
writeFileSync(target, `${out.join("\n").trimEnd()}\n`);
