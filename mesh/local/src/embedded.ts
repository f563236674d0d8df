import { spawn } from "node:child_process";
import { cpSync, existsSync, mkdirSync, readdirSync, renameSync, rmSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

// The built script, from src/ (tests) or dist/ alike.
const templateScript = fileURLToPath(new URL("../dist/pglite-template.js", import.meta.url));

const isDataDir = (dir: string) => existsSync(join(dir, "PG_VERSION"));
const isMissingOrEmpty = (dir: string) => !existsSync(dir) || readdirSync(dir).length === 0;

/**
 * Gives every workload whose PGlite data directory is missing (or empty) one, copied from a
 * template that initdb fills once per data directory root. A fresh PGlite directory costs
 * an initdb each (tens of seconds of CPU and ~800 MB that the process keeps); one initdb,
 * in a short-lived process, and a copy per workload cost a fraction. Returns the workloads
 * that got a new directory.
 */
export async function prepareEmbeddedDatabases(
  root: string,
  names: readonly string[],
  onProgress: (message: string) => void,
): Promise<string[]> {
  mkdirSync(root, { recursive: true });
  const missing = names.filter((name) => isMissingOrEmpty(join(root, name)));
  if (missing.length === 0) return [];
  const template = join(root, ".template");
  if (!isDataDir(template)) {
    onProgress("creating the embedded databases' template (initdb, once per data directory)");
    const partial = `${template}.partial-${process.pid}`;
    rmSync(partial, { recursive: true, force: true });
    await runTemplateProcess(partial);
    rmSync(template, { recursive: true, force: true });
    renameSync(partial, template);
  }
  for (const name of missing) {
    const dir = join(root, name);
    const partial = `${dir}.partial-${process.pid}`;
    cpSync(template, partial, { recursive: true });
    rmSync(dir, { recursive: true, force: true }); // empty, or it would not be missing
    renameSync(partial, dir);
  }
  return missing;
}

function runTemplateProcess(dir: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [templateScript, dir], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    let stderr = "";
    child.stderr.on("data", (chunk: Buffer) => {
      stderr = (stderr + chunk.toString()).slice(-4000);
    });
    child.on("error", reject);
    child.on("exit", (code, signal) => {
      if (code === 0) return resolve();
      const lastLine = stderr.trim().split("\n").filter(Boolean).at(-1) ?? "no output";
      reject(
        new Error(
          `creating the PGlite template in ${dir} failed (exit ${signal ?? code}): ${lastLine}`,
        ),
      );
    });
  });
}
