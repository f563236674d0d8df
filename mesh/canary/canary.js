#!/usr/bin/env node
// The canary CLI: moves a service's traffic between its v1 and v2 subsets by editing the
// weights of its VirtualService in mesh/istio, keeping the file's comments and layout.
//
//   node mesh/canary/canary.js payment 10        v1 90 %, v2 10 %
//   node mesh/canary/canary.js payment promote   v1 0 %, v2 100 %
//   node mesh/canary/canary.js payment rollback  v1 100 %, v2 0 % (the committed file)
//
// Options: --apply pipes the edited file to `kubectl apply -f -` (refused, with nothing
// edited, when kubectl has no current context); --dry-run prints it
// instead of writing it; --dir <path> edits another copy of mesh/istio.
// Exit codes: 0 done, 2 bad arguments (nothing written), 1 anything else.
// After an edit of the repository's mesh/istio, a running local shop (its admin port,
// THINMESH_ADMIN_PORT, default 15090) is asked whether each subset given traffic has a ready
// instance; if not, a warning says which calls will fail.

import { spawnSync } from "node:child_process";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { isMap, isSeq, parseAllDocuments } from "yaml";

const here = dirname(fileURLToPath(import.meta.url));
export const defaultMeshDir = resolve(here, "..", "istio");

export class UsageError extends Error {}

const usage = `usage: canary <service> <percent 0-100 | promote | rollback> [--apply] [--dry-run] [--dir <mesh/istio>]
  <percent>  share of traffic for v2 (v1 gets the rest)
  promote    everything to v2
  rollback   everything to v1 (the committed state)`;

/** The v2 percentage an action asks for, or a UsageError. */
export function parseAction(action) {
  if (action === "promote") return 100;
  if (action === "rollback") return 0;
  if (action === undefined) throw new UsageError(`missing the percentage\n${usage}`);
  if (!/^\d+$/.test(action) || Number(action) > 100) {
    throw new UsageError(
      `"${action}" is not a percentage: give a whole number from 0 to 100, "promote" or "rollback"`,
    );
  }
  return Number(action);
}

/** The route entries of an http route: its destinations with subsets v1 and v2, or none. */
function canaryRoute(route) {
  const destinations = route?.get?.("route");
  if (!isSeq(destinations)) return undefined;
  const bySubset = new Map(
    destinations.items.filter(isMap).map((d) => [d.getIn(["destination", "subset"]), d]),
  );
  if (destinations.items.length !== 2 || !bySubset.has("v1") || !bySubset.has("v2")) {
    return undefined;
  }
  return { v1: bySubset.get("v1"), v2: bySubset.get("v2") };
}

/** The files of a mesh/istio directory and, for each, its VirtualServices with a v1/v2 split. */
export function findCanaries(dir) {
  const found = [];
  for (const name of readdirSync(dir)
    .filter((f) => /\.ya?ml$/.test(f))
    .sort()) {
    const file = join(dir, name);
    const text = readFileSync(file, "utf8");
    const documents = parseAllDocuments(text);
    for (const document of documents) {
      if (document.get?.("kind") !== "VirtualService") continue;
      const routes = document.getIn(["spec", "http"]);
      if (!isSeq(routes)) continue;
      const split = routes.items.map(canaryRoute).find(Boolean);
      if (split) {
        found.push({ service: document.getIn(["metadata", "name"]), file, text, documents, split });
      }
    }
  }
  return found;
}

/**
 * The file's text with the service's weights set: v2 gets `percent`, v1 the rest. Only the two
 * weight scalars change; comments, order and formatting stay as they are.
 */
export function setWeights(dir, service, percent) {
  const canaries = findCanaries(dir);
  const canary = canaries.find((c) => c.service === service);
  if (!canary) {
    const known = canaries.map((c) => c.service).join(", ") || "none";
    throw new UsageError(
      `unknown service "${service}": no VirtualService of that name with v1 and v2 subsets in ${dir} (known: ${known})`,
    );
  }
  const unchanged = canary.documents.map((d) => String(d)).join("");
  if (unchanged !== canary.text) {
    throw new Error(
      `${canary.file} cannot be rewritten without changing its layout; edit the weights by hand`,
    );
  }
  const set = (entry, weight) => {
    const node = entry.get("weight", true);
    if (node && typeof node === "object" && "value" in node) node.value = weight;
    else entry.set("weight", weight);
  };
  set(canary.split.v1, 100 - percent);
  set(canary.split.v2, percent);
  return { file: canary.file, text: canary.documents.map((d) => String(d)).join("") };
}

/** kubectl's current context, or an error saying why --apply cannot run. */
function kubeContext() {
  const result = spawnSync("kubectl", ["config", "current-context"], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
  });
  if (result.error) {
    throw new Error(
      `--apply needs kubectl, which cannot run (${result.error.message}); nothing was changed`,
    );
  }
  const context = result.stdout.trim();
  if (result.status !== 0 || !context) {
    const said = result.stderr.trim().replace(/^error: /, "") || "no kubeconfig";
    throw new Error(
      `--apply needs a cluster, and kubectl has no current context (${said}); create one with ./scripts/cluster-up.sh kind or choose one with kubectl config use-context; nothing was changed`,
    );
  }
  return context;
}

/** Runs the CLI; returns the exit code. */
export function main(argv, io = { out: process.stdout, err: process.stderr }) {
  const flags = new Set(argv.filter((a) => a.startsWith("--") && a !== "--dir"));
  const dirIndex = argv.indexOf("--dir");
  const dir = dirIndex >= 0 ? resolve(argv[dirIndex + 1] ?? "") : defaultMeshDir;
  const positional = argv.filter(
    (a, i) => !a.startsWith("--") && (dirIndex < 0 || i !== dirIndex + 1),
  );
  try {
    for (const flag of flags) {
      if (!["--apply", "--dry-run", "--help"].includes(flag)) {
        throw new UsageError(`unknown option ${flag}\n${usage}`);
      }
    }
    if (flags.has("--help")) {
      io.out.write(`${usage}\n`);
      return 0;
    }
    const [service, action, ...rest] = positional;
    if (!service) throw new UsageError(usage);
    if (rest.length) throw new UsageError(`unexpected arguments: ${rest.join(" ")}\n${usage}`);
    const percent = parseAction(action);
    // Without a context kubectl talks to localhost:8080, which is the local shop's ingress:
    // refuse before anything is edited.
    const context = flags.has("--apply") ? kubeContext() : undefined;
    const { file, text } = setWeights(dir, service, percent);
    if (flags.has("--dry-run")) io.out.write(text);
    else writeFileSync(file, text);
    const where = relative(process.cwd(), file) || file;
    io.err.write(
      `${service}: v1 ${100 - percent} %, v2 ${percent} %${flags.has("--dry-run") ? " (dry run)" : ` (${where})`}\n`,
    );
    if (context) {
      io.err.write(`applying to kubectl context ${context}\n`);
      const result = spawnSync("kubectl", ["apply", "-f", "-"], {
        input: text,
        stdio: ["pipe", "inherit", "inherit"],
      });
      if (result.error) throw new Error(`kubectl apply failed: ${result.error.message}`);
      if (result.status !== 0) {
        io.err.write(`kubectl apply failed (exit code ${result.status})\n`);
        return 1;
      }
    }
    return 0;
  } catch (error) {
    io.err.write(`canary: ${error.message}\n`);
    return error instanceof UsageError ? 2 : 1;
  }
}

/**
 * A warning when the local shop at `adminUrl` is running and has no ready instance of a subset
 * that `percent` gives traffic to: those calls will answer 503 "no healthy upstream", as in a
 * cluster with no pod of that version. Undefined when all is well or no shop answers.
 */
export async function localShopWarning(service, percent, adminUrl) {
  let endpoints;
  try {
    const response = await fetch(new URL("/endpoints", adminUrl), {
      signal: AbortSignal.timeout(1_000),
    });
    if (!response.ok) return undefined;
    endpoints = await response.json();
  } catch {
    return undefined; // no local shop running: nothing to check
  }
  if (!Array.isArray(endpoints)) return undefined;
  const missing = [
    ["v1", 100 - percent],
    ["v2", percent],
  ].filter(
    ([version, share]) =>
      share > 0 &&
      !endpoints.some((e) => e.workload === service && e.version === version && e.ready),
  );
  if (!missing.length) return undefined;
  return missing
    .map(
      ([version, share]) =>
        `warning: the local shop at ${adminUrl} has no ready ${service} ${version} instance, so ${share} % of the calls to ${service} will answer 503 "no healthy upstream" (npm start on the embedded PGlite runs one instance per service; with DATABASE_URL it runs every instance, ${service} ${version} included)`,
    )
    .join("\n");
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const argv = process.argv.slice(2);
  process.exitCode = main(argv);
  const [service, action] = argv.filter((a) => !a.startsWith("--"));
  const editedHere = !argv.includes("--dir") && !argv.includes("--dry-run");
  if (process.exitCode === 0 && editedHere && !argv.includes("--apply")) {
    const adminUrl = `http://127.0.0.1:${process.env.THINMESH_ADMIN_PORT || 15090}`;
    const warning = await localShopWarning(service, parseAction(action), adminUrl);
    if (warning) process.stderr.write(`${warning}\n`);
  }
}
