// Assembles, without Docker, the files of a Dockerfile's final stage: what its COPY
// instructions take from the build context (through .dockerignore), from the build stage (the
// repository's own output of `npm run build`: the build stage runs the same tsc on the same
// sources, laid out the same way under /app) and from the `npm ci` stage (the packages the
// lockfile gives that install, linked from the repository's node_modules). Running the image's
// CMD in that directory shows whether the image holds everything the service needs.
import { execFileSync } from "node:child_process";
import {
  cpSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { dirname, join, posix, relative } from "node:path";
import { parseAllDocuments } from "yaml";
import {
  contextFiles,
  type Dockerfile,
  type Instruction,
  imageArgv,
  imageConfig,
  patternRegex,
  readDockerignore,
  repoRoot,
  type Stage,
  words,
} from "./dockerfile.js";
import type { Loose } from "./manifests.js";

type Entry =
  /** A file copied from the repository. */
  | { kind: "file"; from: string }
  /** A package directory npm would install, linked to the repository's copy. */
  | { kind: "package"; from: string }
  /** A workspace link npm creates (node_modules/@thinmesh/x → ../../packages/x). */
  | { kind: "symlink"; target: string };

/** Image path (absolute, e.g. /app/services/auth/dist/main.js) → where its content comes from. */
type Filesystem = Map<string, Entry>;

interface LockPackage {
  version?: string;
  dev?: boolean;
  optional?: boolean;
  link?: boolean;
  resolved?: string;
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
  peerDependenciesMeta?: Record<string, { optional?: boolean }>;
  devDependencies?: Record<string, string>;
}

export interface NpmCiOptions {
  workspaces: string[];
  includeRoot: boolean;
  omitDev: boolean;
}

/** The flags of an `npm ci` command line that decide what it installs. */
export function npmCiOptions(command: string): NpmCiOptions {
  const workspaces = [...command.matchAll(/(?:--workspace[= ]|-w )(\S+)/g)].map((m) =>
    posix.normalize(m[1]!.replace(/^\.\//, "")),
  );
  return {
    workspaces,
    includeRoot: workspaces.length === 0 || /--include-workspace-root\b/.test(command),
    omitDev: /--omit[= ]dev\b|--production\b/.test(command),
  };
}

/**
 * The lockfile locations (node_modules/x, packages/platform/node_modules/y, workspace dirs)
 * that `npm ci` with these options installs, resolved the way Node.js resolves packages.
 */
export function lockClosure(options: NpmCiOptions, root = repoRoot): Map<string, LockPackage> {
  const lock = JSON.parse(readFileSync(join(root, "package-lock.json"), "utf8")) as {
    packages: Record<string, LockPackage>;
  };
  const packages = lock.packages;
  const found = new Map<string, LockPackage>();
  const resolve = (from: string, name: string): string | undefined => {
    let dir = from;
    for (;;) {
      const candidate = dir ? `${dir}/node_modules/${name}` : `node_modules/${name}`;
      if (packages[candidate]) return candidate;
      if (!dir) return undefined;
      dir = posix.dirname(dir) === "." ? "" : posix.dirname(dir);
    }
  };
  const visit = (location: string, withDev: boolean) => {
    if (found.has(location)) return;
    const entry = packages[location];
    if (!entry) throw new Error(`package-lock.json has no entry ${location}`);
    found.set(location, entry);
    if (entry.link && entry.resolved) {
      visit(entry.resolved, false);
      return;
    }
    const optionalPeers = new Set(
      Object.entries(entry.peerDependenciesMeta ?? {})
        .filter(([, meta]) => meta.optional)
        .map(([name]) => name),
    );
    const wanted: [string, boolean][] = [
      ...Object.keys(entry.dependencies ?? {}).map((n) => [n, false] as [string, boolean]),
      ...Object.keys(entry.optionalDependencies ?? {}).map((n) => [n, true] as [string, boolean]),
      ...Object.keys(entry.peerDependencies ?? {})
        .filter((n) => !optionalPeers.has(n))
        .map((n) => [n, false] as [string, boolean]),
      ...(withDev
        ? Object.keys(entry.devDependencies ?? {}).map((n) => [n, false] as [string, boolean])
        : []),
    ];
    for (const [name, optional] of wanted) {
      const target = resolve(location, name);
      if (target) visit(target, false);
      else if (!optional)
        throw new Error(`${location || "(root)"}: ${name} is not in package-lock.json`);
    }
  };
  for (const workspace of options.workspaces) visit(workspace, !options.omitDev);
  if (options.includeRoot) visit("", !options.omitDev);
  return found;
}

/** The files of a stage, as far as its COPY and npm ci/tsc/rm RUN instructions determine them. */
export function stageFilesystem(dockerfile: Dockerfile, stage: Stage, root = repoRoot): Filesystem {
  const fs: Filesystem = stage.base
    ? new Map(stageFilesystem(dockerfile, stage.base, root))
    : new Map();
  const rules = readDockerignore(root);
  let workdir = stage.base ? imageConfig(stage.base).workdir : "/";
  for (const instruction of stage.instructions) {
    if (instruction.keyword === "WORKDIR")
      workdir = posix.resolve(workdir, instruction.args.trim());
    if (instruction.keyword === "COPY") copy(instruction, workdir);
    if (instruction.keyword === "RUN") run(instruction.args, workdir);
  }
  return fs;

  function copy(instruction: Instruction, workdir: string) {
    const all = instruction.json ?? words(instruction.args);
    const sources = all.slice(0, -1);
    const dest = posix.resolve(workdir, all.at(-1)!);
    const intoDirectory = sources.length > 1 || all.at(-1)!.endsWith("/");
    const fromName = instruction.flags.from;
    if (fromName !== undefined) {
      const from = dockerfile.stages.find((s) => s.name === fromName);
      if (!from)
        throw new Error(`line ${instruction.line}: COPY --from=${fromName}: not a stage here`);
      const other = stageFilesystem(dockerfile, from, root);
      for (const source of sources) {
        const base = posix.resolve("/", source);
        let matched = false;
        for (const [path, entry] of other) {
          if (path === base) {
            fs.set(intoDirectory ? posix.join(dest, posix.basename(path)) : dest, entry);
            matched = true;
          } else if (path.startsWith(`${base.replace(/\/$/, "")}/`)) {
            fs.set(posix.join(dest, path.slice(base.replace(/\/$/, "").length + 1)), entry);
            matched = true;
          }
        }
        if (!matched) {
          throw new Error(
            `line ${instruction.line}: COPY --from=${fromName} ${source}: stage ${fromName} has no such path`,
          );
        }
      }
      return;
    }
    for (const source of sources) {
      const rel = posix
        .normalize(source)
        .replace(/^\.?\/+/, "")
        .replace(/\/$/, "");
      const abs = join(root, rel);
      if (!existsSync(abs))
        throw new Error(`line ${instruction.line}: COPY ${source}: not in the repository`);
      if (statSync(abs).isDirectory()) {
        for (const file of contextFiles(rel, rules, root)) {
          fs.set(posix.join(dest, posix.relative(rel, file)), { kind: "file", from: file });
        }
      } else {
        fs.set(intoDirectory ? posix.join(dest, posix.basename(rel)) : dest, {
          kind: "file",
          from: rel,
        });
      }
    }
  }

  function run(command: string, workdir: string) {
    // rm -rf <paths or globs> (relative to WORKDIR), in any step of the command.
    for (const step of command.split(/&&|;|\|\|/)) {
      const [program, ...rest] = words(step);
      if (program !== "rm") continue;
      const targets = rest.filter((word) => !word.startsWith("-"));
      const patterns = targets.map((target) => patternRegex(posix.resolve(workdir, target)));
      for (const path of [...fs.keys()]) {
        const parts = path.split("/");
        const prefixes = parts.map((_, i) => parts.slice(0, i + 1).join("/")).slice(1);
        if (prefixes.some((prefix) => patterns.some((pattern) => pattern.test(prefix)))) {
          fs.delete(path);
        }
      }
    }
    if (/\bnpm ci\b/.test(command)) {
      for (const [location, entry] of lockClosure(npmCiOptions(command), root)) {
        if (!location.includes("node_modules/")) continue; // workspace directories: copied
        const path = posix.join(workdir, location);
        if (entry.link && entry.resolved) {
          fs.set(path, {
            kind: "symlink",
            target: posix.relative(posix.dirname(path), posix.join(workdir, entry.resolved)),
          });
        } else if (existsSync(join(root, location))) {
          fs.set(path, { kind: "package", from: location });
        } else if (!entry.optional) {
          throw new Error(`${location} is locked but not installed here: run npm ci`);
        }
      }
    }
    const tsc = command.match(/\btsc(?:\.js)?\s+(?:-b|--build)\s+(\S+)/);
    if (tsc) {
      for (const project of projectReferences(posix.normalize(tsc[1]!), root)) {
        const outDir = posix.join(posix.dirname(project), "dist");
        if (!existsSync(join(root, outDir))) {
          throw new Error(`${outDir} is missing: run npm run build first`);
        }
        for (const file of listFiles(join(root, outDir))) {
          const rel = posix.join(outDir, relative(join(root, outDir), file).split("\\").join("/"));
          fs.set(posix.join(workdir, rel), { kind: "file", from: rel });
        }
      }
    }
  }
}

/**
 * What the final stage holds that only building or testing uses: TypeScript sources (the
 * compiled .d.ts aside), src/ and test/ folders, tsconfig files and build info. Empty when
 * the image holds none of it. (Installed packages are npm's business and not looked into.)
 */
export function imageContentProblems(dockerfile: Dockerfile, root = repoRoot): string[] {
  const fs = stageFilesystem(dockerfile, dockerfile.stages.at(-1)!, root);
  const problems: string[] = [];
  for (const [path, entry] of fs) {
    if (entry.kind !== "file") continue;
    const name = posix.basename(path);
    const why =
      /\.[mc]?ts$/.test(name) && !/\.d\.[mc]?ts$/.test(name)
        ? "TypeScript source"
        : /(^|\/)(src|test)\//.test(path)
          ? "a source or test folder"
          : /^tsconfig.*\.json$|\.tsbuildinfo$/.test(name)
            ? "build configuration"
            : undefined;
    if (why) problems.push(`the image holds ${path} (${why}; from ${entry.from})`);
  }
  return problems.sort();
}

/** A tsconfig and the tsconfigs it references, transitively. */
function projectReferences(tsconfig: string, root: string, seen = new Set<string>()): string[] {
  if (seen.has(tsconfig)) return [];
  seen.add(tsconfig);
  const json = JSON.parse(readFileSync(join(root, tsconfig), "utf8")) as {
    references?: { path: string }[];
  };
  for (const reference of json.references ?? []) {
    let path = posix.normalize(posix.join(posix.dirname(tsconfig), reference.path));
    if (!path.endsWith(".json")) path = posix.join(path, "tsconfig.json");
    projectReferences(path, root, seen);
  }
  return [...seen];
}

function listFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory() ? listFiles(join(dir, entry.name)) : [join(dir, entry.name)],
  );
}

export interface AssembledImage {
  /** The directory standing in for the image's /. */
  root: string;
  /** WORKDIR, mapped into root. */
  workdir: string;
  argv: string[];
  env: Record<string, string>;
  user: string | undefined;
  /** Image paths of the packages the image's node_modules hold. */
  packages: string[];
}

/** Writes the final stage's files under dir (as its /) and returns how the image runs. */
export function assembleImage(
  dockerfile: Dockerfile,
  dir: string,
  root = repoRoot,
): AssembledImage {
  const final = dockerfile.stages.at(-1)!;
  const fs = stageFilesystem(dockerfile, final, root);
  const at = (path: string) => join(dir, ...path.split("/"));
  const linked: string[] = [];
  for (const [path, entry] of [...fs].sort(([a], [b]) => a.localeCompare(b))) {
    // A package nested in a linked one (node_modules/a/node_modules/b) comes with it.
    if (linked.some((parent) => path.startsWith(`${parent}/`))) continue;
    if (entry.kind !== "file") linked.push(path);
    mkdirSync(dirname(at(path)), { recursive: true });
    if (entry.kind === "file") cpSync(join(root, entry.from), at(path));
    else if (entry.kind === "package") symlinkSync(join(root, entry.from), at(path), "dir");
    else symlinkSync(entry.target, at(path), "dir");
  }
  const config = imageConfig(final);
  mkdirSync(at(config.workdir), { recursive: true });
  mkdirSync(join(dir, "tmp"), { recursive: true });
  return {
    root: dir,
    workdir: at(config.workdir),
    argv: imageArgv(config),
    env: config.env,
    user: config.user,
    packages: [...fs].filter(([, e]) => e.kind === "package").map(([p]) => p),
  };
}

/** path → size and mtime of everything under dir (symlinks not followed), to spot writes. */
export function snapshot(dir: string): Map<string, string> {
  const result = new Map<string, string>();
  const walk = (path: string) => {
    const stat = lstatSync(path);
    result.set(relative(dir, path), `${stat.size}:${stat.mtimeMs}`);
    if (stat.isDirectory()) for (const name of readdirSync(path)) walk(join(path, name));
  };
  walk(dir);
  return result;
}

export interface ClusterEnv {
  env: Record<string, string>;
  /** Where the values came from (the rendered overlay, or the fallback). */
  source: string;
}

/**
 * The environment a service's container gets from the dev overlay (ConfigMaps, Secrets, the
 * downward API, configMap volumes written under dir and their paths mapped there), or
 * undefined when the overlay cannot be rendered here (no kubectl, no overlay).
 */
export function clusterEnv(service: string, dir: string, root = repoRoot): ClusterEnv | undefined {
  const overlay = "kustomize/overlays/dev";
  if (!existsSync(join(root, overlay))) return undefined;
  let rendered: string;
  try {
    rendered = execFileSync("kubectl", ["kustomize", overlay], { cwd: root, encoding: "utf8" });
  } catch {
    return undefined;
  }
  const objects = parseAllDocuments(rendered)
    .map((d) => d.toJS() as Loose)
    .filter(Boolean);
  const deployment = objects.find(
    (o) =>
      o.kind === "Deployment" &&
      (o.metadata?.name === service ||
        (o.spec?.template?.metadata?.labels?.app === service &&
          o.spec?.template?.metadata?.labels?.version === "v1")),
  );
  if (!deployment) return undefined;
  const pod = deployment.spec.template;
  const container =
    pod.spec.containers.find((c: Loose) => c.name === service) ?? pod.spec.containers[0];
  const data = (kind: string, name: string): Record<string, string> => {
    const object = objects.find((o) => o.kind === kind && o.metadata?.name === name);
    if (!object) throw new Error(`${service}: ${kind} ${name} is not in ${overlay}`);
    if (kind === "ConfigMap") return object.data ?? {};
    return {
      ...Object.fromEntries(
        Object.entries(object.data ?? {}).map(([k, v]) => [
          k,
          Buffer.from(String(v), "base64").toString(),
        ]),
      ),
      ...(object.stringData ?? {}),
    };
  };

  const env: Record<string, string> = {};
  for (const from of container.envFrom ?? []) {
    const values = from.configMapRef
      ? data("ConfigMap", from.configMapRef.name)
      : data("Secret", from.secretRef.name);
    for (const [key, value] of Object.entries(values)) env[`${from.prefix ?? ""}${key}`] = value;
  }
  for (const variable of container.env ?? []) {
    if (variable.value !== undefined) {
      env[variable.name] = String(variable.value).replace(
        /\$\((\w+)\)/g,
        (whole, name) => env[name] ?? whole,
      );
      continue;
    }
    const source = variable.valueFrom ?? {};
    if (source.configMapKeyRef) {
      env[variable.name] =
        data("ConfigMap", source.configMapKeyRef.name)[source.configMapKeyRef.key] ?? "";
    } else if (source.secretKeyRef) {
      env[variable.name] = data("Secret", source.secretKeyRef.name)[source.secretKeyRef.key] ?? "";
    } else if (source.fieldRef) {
      const path: string = source.fieldRef.fieldPath;
      const label = path.match(/^metadata\.labels\['(.+)'\]$/);
      env[variable.name] = label
        ? (pod.metadata?.labels?.[label[1]!] ?? "")
        : path === "metadata.namespace"
          ? (deployment.metadata?.namespace ?? "shop")
          : `${service}-pod`;
    } else {
      env[variable.name] = "1";
    }
  }
  // configMap volumes: their files, written where the container would see them.
  for (const mount of container.volumeMounts ?? []) {
    const volume = pod.spec.volumes?.find((v: Loose) => v.name === mount.name);
    if (!volume?.configMap) continue;
    const files = data("ConfigMap", volume.configMap.name);
    const target = join(dir, ...String(mount.mountPath).split("/"));
    mkdirSync(target, { recursive: true });
    for (const [name, content] of Object.entries(files)) writeFileSync(join(target, name), content);
    for (const [key, value] of Object.entries(env)) {
      if (value === mount.mountPath || value.startsWith(`${mount.mountPath}/`)) {
        env[key] = join(target, value.slice(String(mount.mountPath).length));
      }
    }
  }
  return { env, source: `${overlay} (Deployment ${deployment.metadata.name})` };
}
