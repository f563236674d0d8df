import { type DescMessage, type Message, ScalarType } from "@bufbuild/protobuf";
import { type ReflectMessage, reflect } from "@bufbuild/protobuf/reflect";

const hasNul = (value: unknown) => typeof value === "string" && value.includes("\0");

/**
 * The path of the first string in a message (nested messages, repeated fields and maps
 * included) that holds a NUL character, or undefined. Postgres cannot store U+0000 in text,
 * and no field of these contracts has a use for it.
 */
export function fieldWithNul(schema: DescMessage, message: Message): string | undefined {
  return search(reflect(schema, message), "");
}

function search(message: ReflectMessage, prefix: string): string | undefined {
  for (const field of message.fields) {
    if (!message.isSet(field)) continue;
    const path = prefix + field.name;
    switch (field.fieldKind) {
      case "scalar":
        if (field.scalar === ScalarType.STRING && hasNul(message.get(field))) return path;
        break;
      case "message": {
        const found = search(message.get(field), `${path}.`);
        if (found) return found;
        break;
      }
      case "list": {
        let index = 0;
        for (const item of message.get(field)) {
          const itemPath = `${path}[${index++}]`;
          if (hasNul(item)) return itemPath;
          if (field.listKind === "message") {
            const found = search(item as ReflectMessage, `${itemPath}.`);
            if (found) return found;
          }
        }
        break;
      }
      case "map":
        for (const [key, value] of message.get(field)) {
          const entryPath = `${path}[${JSON.stringify(String(key))}]`;
          if (hasNul(key) || hasNul(value)) return entryPath;
          if (field.mapKind === "message") {
            const found = search(value as ReflectMessage, `${entryPath}.`);
            if (found) return found;
          }
        }
        break;
    }
  }
  return undefined;
}
