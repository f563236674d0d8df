// npm run -w @thinmesh/auth rotate-keys — with the service's DATABASE_URL in the environment.
import { ConfigError } from "@thinmesh/platform";
import { rotateKeys } from "./rotate-keys-command.js";

try {
  const { kid, retired, deleted } = await rotateKeys(process.env);
  process.stdout.write(
    [
      `new signing key: ${kid}`,
      `retired (still published until their tokens expire): ${retired.join(", ") || "none"}`,
      `deleted keys past their publication window: ${deleted}`,
      "",
    ].join("\n"),
  );
} catch (error) {
  if (!(error instanceof ConfigError)) throw error;
  process.stderr.write(`rotate-keys: ${error.message}\n`);
  process.exit(78); // EX_CONFIG
}
