import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";

/** The image tests check the CMD against, and run, the output of `npm run build`. */
export default function build() {
  execFileSync(process.execPath, ["node_modules/typescript/bin/tsc", "-b", "tsconfig.build.json"], {
    cwd: fileURLToPath(new URL("../..", import.meta.url)),
    stdio: "inherit",
  });
}
