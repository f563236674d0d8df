import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";

/** System tests run the built services exactly as `npm start` and the images do. */
export default function build() {
  execFileSync(process.execPath, ["node_modules/typescript/bin/tsc", "-b", "tsconfig.build.json"], {
    cwd: fileURLToPath(new URL("../..", import.meta.url)),
    stdio: "inherit",
  });
}
