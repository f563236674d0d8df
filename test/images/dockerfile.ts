// A small Dockerfile reader and the checks every service image must pass. No Docker engine
// is needed: the checks read the Dockerfile, the repository and .dockerignore the way
// `docker build` would, and image.ts assembles the final image's files from them.
//
// Build arguments are resolved the way `docker build --build-arg NAME=value` resolves them:
// an ARG before the first FROM is seen by FROM lines only; inside a stage a name is known from
// its ARG (or ENV) on, until the stage ends; a --build-arg value wins over an ARG's default, and
// an ENV over an ARG of the same name. ${NAME} is substituted where Docker substitutes it
// (ADD, COPY and their flags, ENV, EXPOSE, LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR, ARG
// defaults), in shell-form RUN as the shell would see it (ARGs and ENVs are its environment),
// and never in the exec form or in CMD/ENTRYPOINT, which Docker leaves as written.
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join, posix } from "node:path";
import { fileURLToPath } from "node:url";

export const repoRoot = fileURLToPath(new URL("../..", import.meta.url));

/** The one Dockerfile every service image is built from (--build-arg SERVICE=<name>). */
export const serviceDockerfilePath = join(repoRoot, "Dockerfile");

/** The build arguments that select a service's image (what skaffold, Tilt and CI pass). */
export function serviceBuildArgs(service: string): Record<string, string> {
  return { SERVICE: service };
}

/** The service Dockerfile read with a service's build arguments (text: a variation of it). */
export function serviceDockerfile(service: string, text?: string): Dockerfile {
  return parseDockerfile(serviceDockerfilePath, { buildArgs: serviceBuildArgs(service), text });
}

export interface Instruction {
  keyword: string;
  /** The arguments after the flags, build arguments substituted where Docker substitutes them. */
  args: string;
  /** The arguments after the flags, as written (continuations joined). */
  raw: string;
  /** Leading --flags (--from=build → { from: "build" }; repeated flags keep the last). */
  flags: Record<string, string>;
  /** Every --mount and the like, in order. */
  flagList: [string, string][];
  /** The exec form's argv (["node", "main.js"]), if the arguments are a JSON array. */
  json?: string[];
  line: number;
}

export interface Stage {
  index: number;
  name?: string;
  /** The image or earlier stage it starts from, ARGs substituted. */
  from: string;
  /** The earlier stage it starts from, if any. */
  base?: Stage;
  instructions: Instruction[];
  /** The ARGs this stage declares, with the value each gets (undefined: none given). */
  args: Record<string, string | undefined>;
  line: number;
}

export interface Dockerfile {
  path: string;
  /** The ARGs before the first FROM, with the value each gets (undefined: none given). */
  args: Record<string, string | undefined>;
  /** The --build-arg values it was read with. */
  buildArgs: Record<string, string>;
  stages: Stage[];
  /** Problems found while reading (unknown stage, unsupported syntax, unset ARG, …). */
  errors: string[];
}

export interface ReadOptions {
  /** --build-arg NAME=value, as the caller passes them. */
  buildArgs?: Record<string, string>;
  /** The Dockerfile's text, if not the file at path. */
  text?: string | undefined;
}

const keywords = new Set([
  "ADD",
  "ARG",
  "CMD",
  "COPY",
  "ENTRYPOINT",
  "ENV",
  "EXPOSE",
  "FROM",
  "HEALTHCHECK",
  "LABEL",
  "MAINTAINER",
  "ONBUILD",
  "RUN",
  "SHELL",
  "STOPSIGNAL",
  "USER",
  "VOLUME",
  "WORKDIR",
]);

/** The instructions whose arguments Docker itself substitutes ${NAME} in. */
const substituted = new Set([
  "ADD",
  "ARG",
  "COPY",
  "ENV",
  "EXPOSE",
  "LABEL",
  "STOPSIGNAL",
  "USER",
  "VOLUME",
  "WORKDIR",
]);

/** ARGs Docker defines without an ARG instruction. */
const predefinedArgs = new Set(
  ["HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY"].flatMap((n) => [
    n,
    n.toLowerCase(),
  ]),
);

export function parseDockerfile(path: string, options: ReadOptions = {}): Dockerfile {
  const text = options.text ?? readFileSync(path, "utf8");
  const buildArgs = options.buildArgs ?? {};
  const errors: string[] = [];
  const logical: { text: string; line: number }[] = [];
  let current: { text: string; line: number } | undefined;
  text.split(/\r?\n/).forEach((raw, i) => {
    const trimmed = raw.trim();
    // Comment lines (and parser directives) are dropped, also inside a continuation.
    if (trimmed.startsWith("#")) return;
    if (!current) {
      if (trimmed === "") return;
      current = { text: "", line: i + 1 };
    }
    if (/\\\s*$/.test(raw)) {
      current.text += `${raw.replace(/\\\s*$/, "")} `;
    } else {
      current.text += raw;
      logical.push({ text: current.text.trim(), line: current.line });
      current = undefined;
    }
  });
  if (current) logical.push({ text: current.text.trim(), line: current.line });

  const globalArgs: Record<string, string | undefined> = {};
  /** Every ARG name declared anywhere, to tell a forgotten re-declaration from a shell variable. */
  const declaredAnywhere = new Set<string>();
  const stages: Stage[] = [];
  /** The ENV of each stage at its end (inherited by the stages built on it). */
  const stageEnv = new Map<Stage, Record<string, string>>();
  let env: Record<string, string> = {};

  for (const { text: instructionText, line } of logical) {
    const match = instructionText.match(/^(\S+)\s*([\s\S]*)$/);
    const keyword = match?.[1]?.toUpperCase() ?? "";
    if (!keywords.has(keyword)) {
      errors.push(`line ${line}: unknown instruction ${JSON.stringify(match?.[1])}`);
      continue;
    }
    const { flags, flagList, rest } = splitFlags(match?.[2] ?? "");
    if (/<<-?\s*["']?\w+/.test(rest) && (keyword === "RUN" || keyword === "COPY")) {
      errors.push(`line ${line}: heredocs are not supported by this checker`);
    }
    const stage = stages.at(-1);

    if (keyword === "FROM") {
      // FROM sees the ARGs before the first FROM, and nothing else.
      const words = rest.split(/\s+/);
      const from = expand(words[0] ?? "", {
        line,
        lookup: (name) => ({ declared: name in globalArgs, value: globalArgs[name] }),
        missing: (name, declared) =>
          errors.push(
            `line ${line}: FROM ${words[0]}: ${declared ? `ARG ${name} has no value` : `no ARG ${name} before the first FROM`}`,
          ),
        errors,
      });
      const name = words[1]?.toUpperCase() === "AS" ? words[2] : undefined;
      const base = stages.find((s) => s.name !== undefined && s.name === from);
      const next: Stage = { index: stages.length, from, instructions: [], args: {}, line };
      if (name) next.name = name;
      if (base) next.base = base;
      stages.push(next);
      if (stage) stageEnv.set(stage, env);
      env = base ? { ...stageEnv.get(base) } : {};
      continue;
    }

    if (!stage) {
      if (keyword === "ARG") {
        for (const [key, fallback] of argDeclarations(rest)) {
          const value =
            fallback === undefined
              ? undefined
              : expand(fallback, {
                  line,
                  lookup: (n) => ({ declared: n in globalArgs, value: globalArgs[n] }),
                  missing: () => {},
                  errors,
                });
          globalArgs[key] = buildArgs[key] ?? value;
          declaredAnywhere.add(key);
        }
      } else {
        errors.push(`line ${line}: ${keyword} before the first FROM`);
      }
      continue;
    }

    // Inside a stage: ENV first, then the stage's own ARGs.
    const lookup = (name: string) =>
      name in env
        ? { declared: true, value: env[name] }
        : { declared: name in stage.args, value: stage.args[name] };
    const unset = (name: string, declared: boolean) => {
      if (declared) {
        errors.push(
          `line ${line}: \${${name}} is empty: ARG ${name} has no value (pass --build-arg ${name}=…)`,
        );
      } else if (declaredAnywhere.has(name) || name in buildArgs) {
        errors.push(
          `line ${line}: \${${name}} is not declared in this stage, so Docker makes it empty: add ARG ${name} after its FROM (an ARG's scope ends with its stage; one before the first FROM reaches only FROM lines)`,
        );
      } else {
        errors.push(`line ${line}: \${${name}} is not set here (no ARG or ENV ${name})`);
      }
    };

    let args = rest;
    const json = parseJsonArray(rest);
    if (substituted.has(keyword)) {
      args = expand(rest, { line, lookup, missing: unset, errors });
      for (const [i, [key, value]] of flagList.entries()) {
        const expanded = expand(value, { line, lookup, missing: unset, errors });
        flagList[i] = [key, expanded];
        flags[key] = expanded;
      }
    } else if (keyword === "RUN" && !json) {
      // The shell expands the rest at build time, with the ARGs and ENVs as its environment:
      // a name the stage does not know may be the shell's own variable, so it stays as written,
      // unless it is an ARG of another scope (a forgotten re-declaration).
      args = expand(rest, {
        line,
        lookup,
        missing: (name, declared) => {
          if (declared || declaredAnywhere.has(name) || name in buildArgs) unset(name, declared);
        },
        keepUnknown: (name) => !lookup(name).declared,
        errors,
      });
    }

    const instruction: Instruction = { keyword, args, raw: rest, flags, flagList, line };
    const parsed = substituted.has(keyword) ? parseJsonArray(args) : json;
    if (parsed) instruction.json = parsed;
    stage.instructions.push(instruction);

    if (keyword === "ARG") {
      for (const [key, fallback] of argDeclarations(args)) {
        stage.args[key] = buildArgs[key] ?? fallback ?? globalArgs[key];
        declaredAnywhere.add(key);
      }
    }
    if (keyword === "ENV") Object.assign(env, parseEnv(args));
    if (keyword === "COPY" || keyword === "ADD") {
      const from = instruction.flags.from;
      if (from !== undefined && !/[/:]/.test(from) && !stages.some((s) => s.name === from)) {
        if (!/^\d+$/.test(from)) errors.push(`line ${line}: COPY --from=${from}: no such stage`);
      }
    }
  }

  for (const name of Object.keys(buildArgs)) {
    if (!declaredAnywhere.has(name) && !predefinedArgs.has(name)) {
      errors.push(
        `--build-arg ${name}: no ARG ${name} in the Dockerfile (Docker warns that it is not consumed)`,
      );
    }
  }
  return { path, args: globalArgs, buildArgs, stages, errors: [...new Set(errors)] };
}

/** ARG A=1 B → [["A", "1"], ["B", undefined]] (defaults as written, not yet substituted). */
function argDeclarations(text: string): [string, string | undefined][] {
  return words(text).flatMap((word) => {
    const [key, value] = splitAssignment(word);
    return key ? [[key, value] as [string, string | undefined]] : [];
  });
}

function splitFlags(text: string) {
  const flags: Record<string, string> = {};
  const flagList: [string, string][] = [];
  let rest = text.trimStart();
  for (;;) {
    const match = rest.match(/^--([\w-]+)(?:=("[^"]*"|\S*))?\s*/);
    if (!match) break;
    const value = (match[2] ?? "true").replace(/^"|"$/g, "");
    flags[match[1]!] = value;
    flagList.push([match[1]!, value]);
    rest = rest.slice(match[0].length);
  }
  return { flags, flagList, rest: rest.trim() };
}

function parseJsonArray(text: string): string[] | undefined {
  if (!text.startsWith("[")) return undefined;
  try {
    const value: unknown = JSON.parse(text);
    if (Array.isArray(value) && value.every((v) => typeof v === "string")) return value;
  } catch {}
  return undefined;
}

function splitAssignment(text: string): [string | undefined, string | undefined] {
  const at = text.indexOf("=");
  if (at < 0) return [text.trim() || undefined, undefined];
  return [text.slice(0, at).trim(), unquote(text.slice(at + 1).trim())];
}

const unquote = (value: string) =>
  value.replace(/^"([\s\S]*)"$/, "$1").replace(/^'([\s\S]*)'$/, "$1");

interface Expansion {
  line: number;
  /** Whether the name is declared here, and its value (undefined: declared without one). */
  lookup: (name: string) => { declared: boolean; value: string | undefined };
  /** Called for a name that expands to nothing without a fallback of its own. */
  missing: (name: string, declared: boolean) => void;
  /** Names to leave as written (a shell variable in RUN). */
  keepUnknown?: (name: string) => boolean;
  errors: string[];
}

/**
 * Docker's substitution: $NAME and ${NAME}, with ${NAME:-word}, ${NAME-word}, ${NAME:+word}
 * and ${NAME+word}; nothing inside single quotes; \$ is a literal $.
 */
export function expand(text: string, options: Expansion): string {
  const pattern = /\\\$|'[^']*'|\$\{(\w+)(?:(:?[-+])([^}]*))?\}|\$\{([^}]*)\}|\$(\w+)/g;
  return text.replace(pattern, (whole, braced, operator, word, other, bare) => {
    if (whole === "\\$") return options.keepUnknown ? whole : "$";
    if (whole.startsWith("'")) return whole;
    if (other !== undefined) {
      options.errors.push(
        `line ${options.line}: \${${other}}: only \${NAME}, \${NAME:-word} and \${NAME:+word} are supported by this checker`,
      );
      return whole;
    }
    const name: string = braced ?? bare;
    const { declared, value } = options.lookup(name);
    const set = value !== undefined;
    const nonEmpty = set && value !== "";
    switch (operator) {
      case ":-":
        return nonEmpty ? value : word;
      case "-":
        return set ? value : word;
      case ":+":
        return nonEmpty ? word : "";
      case "+":
        return set ? word : "";
    }
    if (set) return value;
    if (options.keepUnknown?.(name)) {
      options.missing(name, declared);
      return whole;
    }
    options.missing(name, declared);
    return "";
  });
}

/** Shell-style words (quotes group and are removed, a backslash escapes the next character). */
export function words(text: string): string[] {
  const result: string[] = [];
  let word: string | undefined;
  let quote: string | undefined;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quote) {
      if (c === quote) quote = undefined;
      else if (c === "\\" && quote === '"' && i + 1 < text.length) word += text[++i]!;
      else word += c;
    } else if (/\s/.test(c)) {
      if (word !== undefined) result.push(word);
      word = undefined;
    } else if (c === '"' || c === "'") {
      quote = c;
      word ??= "";
    } else if (c === "\\" && i + 1 < text.length) {
      word = (word ?? "") + text[++i]!;
    } else {
      word = (word ?? "") + c;
    }
  }
  if (word !== undefined) result.push(word);
  return result;
}

/** The stage and the stages it starts from, first the oldest. */
export function chain(stage: Stage): Stage[] {
  return stage.base ? [...chain(stage.base), stage] : [stage];
}

/** What `docker inspect` would show for a stage, as far as this Dockerfile says. */
export interface ImageConfig {
  user?: string;
  workdir: string;
  env: Record<string, string>;
  entrypoint?: string[];
  /** An ENTRYPOINT or CMD in the shell form (run through /bin/sh -c). */
  shellForm: string[];
  cmd?: string[];
  exposed: string[];
  labels: Record<string, string>;
  /** The image at the bottom of the chain (entrypoint and user may come from there). */
  baseImage: string;
}

export function imageConfig(stage: Stage): ImageConfig {
  const stages = chain(stage);
  const config: ImageConfig = {
    workdir: "/",
    env: {},
    shellForm: [],
    exposed: [],
    labels: {},
    baseImage: stages[0]!.from,
  };
  for (const s of stages) {
    for (const instruction of s.instructions) {
      const { keyword, args, json } = instruction;
      if (keyword === "USER") config.user = args.trim();
      if (keyword === "WORKDIR") config.workdir = posix.resolve(config.workdir, args.trim());
      if (keyword === "ENV") Object.assign(config.env, parseEnv(args));
      if (keyword === "LABEL") Object.assign(config.labels, parseEnv(args));
      if (keyword === "EXPOSE") config.exposed.push(...args.split(/\s+/).filter(Boolean));
      if (keyword === "ENTRYPOINT" || keyword === "CMD") {
        if (!json) config.shellForm.push(`${keyword} ${args}`);
        const argv = json ?? ["/bin/sh", "-c", args];
        if (keyword === "ENTRYPOINT") {
          config.entrypoint = argv;
          // Docker: setting ENTRYPOINT resets a CMD inherited from the base.
          delete config.cmd;
        } else {
          config.cmd = argv;
        }
      }
    }
  }
  return config;
}

function parseEnv(args: string): Record<string, string> {
  const env: Record<string, string> = {};
  if (!/^[\w.-]+=/.test(args)) {
    const [key, ...value] = args.split(/\s+/);
    if (key) env[key] = value.join(" ");
    return env;
  }
  for (const word of words(args)) {
    const [key, value] = splitAssignment(word);
    if (key) env[key] = value ?? "";
  }
  return env;
}

// ---- .dockerignore --------------------------------------------------------------------------

export interface IgnoreRule {
  pattern: string;
  negated: boolean;
  regex: RegExp;
}

/** .dockerignore's rules, read the way Docker (moby/patternmatcher) reads them. */
export function readDockerignore(root = repoRoot): IgnoreRule[] {
  const file = join(root, ".dockerignore");
  return existsSync(file) ? parseIgnoreRules(readFileSync(file, "utf8")) : [];
}

export function parseIgnoreRules(text: string): IgnoreRule[] {
  return text
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line && !line.startsWith("#"))
    .map((line) => {
      const negated = line.startsWith("!");
      const pattern = posix.normalize(negated ? line.slice(1).trim() : line).replace(/^\/+/, "");
      return { pattern, negated, regex: patternRegex(pattern) };
    });
}

/** A .dockerignore pattern (or a shell glob: *, ?, [...]) as a regular expression. */
export function patternRegex(pattern: string): RegExp {
  let source = "";
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === "*" && pattern[i + 1] === "*") {
      i++;
      if (pattern[i + 1] === "/") {
        i++;
        source += "(?:.*/)?";
      } else {
        source += ".*";
      }
    } else if (c === "*") {
      source += "[^/]*";
    } else if (c === "?") {
      source += "[^/]";
    } else if (c === "[") {
      const end = pattern.indexOf("]", i + 1);
      if (end < 0) {
        source += "\\[";
      } else {
        source += `[${pattern
          .slice(i + 1, end)
          .replace(/^!/, "^")
          .replace(/\\/g, "\\\\")}]`;
        i = end;
      }
    } else if (c === "\\" && i + 1 < pattern.length) {
      i++;
      source += pattern[i]!.replace(/[.+^${}()|[\]\\]/g, "\\$&");
    } else {
      source += c.replace(/[.+^${}()|[\]\\]/g, "\\$&");
    }
  }
  return new RegExp(`^${source}$`);
}

/**
 * Whether a path (relative to the context, with /) is left out of the build context: the last
 * rule that matches the path or one of its parent directories decides.
 */
export function isIgnored(path: string, rules: IgnoreRule[]): boolean {
  const parts = posix
    .normalize(path)
    .replace(/^\.?\/+/, "")
    .split("/");
  const prefixes = parts.map((_, i) => parts.slice(0, i + 1).join("/"));
  let ignored = false;
  for (const rule of rules) {
    if (prefixes.some((prefix) => rule.regex.test(prefix))) ignored = !rule.negated;
  }
  return ignored;
}

/** Every file under a directory of the context that the build would receive. */
export function contextFiles(dir: string, rules: IgnoreRule[], root = repoRoot): string[] {
  const files: string[] = [];
  const walk = (rel: string) => {
    for (const entry of readdirSync(join(root, rel), { withFileTypes: true })) {
      const child = posix.join(rel, entry.name);
      if (isIgnored(child, rules)) continue;
      if (entry.isDirectory()) walk(child);
      else files.push(child);
    }
  };
  walk(dir);
  return files;
}

// ---- the checks -----------------------------------------------------------------------------

export interface CheckOptions {
  /** The service the image is for (services/<service>). */
  service: string;
  root?: string;
}

/**
 * What is wrong with a service's Dockerfile; empty when nothing is. Each message names the
 * line and what to change.
 */
export function checkDockerfile(dockerfile: Dockerfile, options: CheckOptions): string[] {
  const root = options.root ?? repoRoot;
  const rules = readDockerignore(root);
  const problems = [...dockerfile.errors];
  const final = dockerfile.stages.at(-1);
  if (!final) return [...problems, "no FROM: not a Dockerfile"];
  if (dockerfile.stages.length < 2) {
    problems.push("single stage: build in one stage, copy only the output into the image");
  }

  for (const stage of dockerfile.stages) {
    if (stage.base) continue;
    const problem = nodeImageProblem(stage.from, stage === final || chain(final)[0] === stage);
    if (problem) problems.push(`line ${stage.line}: FROM ${stage.from}: ${problem}`);
  }

  const config = imageConfig(final);
  const at = `the final stage (line ${final.line})`;
  const user = config.user;
  if (!user) {
    problems.push(`${at} sets no USER: the image would run as root; add USER 1000:1000`);
  } else {
    const uid = user.split(":")[0]!;
    if (uid === "root" || uid === "0") {
      problems.push(`${at} runs as root (USER ${user}); use an unprivileged uid such as 1000`);
    } else if (!/^\d+$/.test(uid)) {
      problems.push(
        `${at}: USER ${user} is a name; use the numeric uid (USER 1000:1000) so that Kubernetes can verify runAsNonRoot`,
      );
    }
  }
  if (config.env.NODE_ENV !== "production") problems.push(`${at} does not set NODE_ENV=production`);
  if (!config.exposed.some((port) => port.replace(/\/tcp$/, "") === "8080")) {
    problems.push(`${at} does not EXPOSE 8080 (the services' one port in the cluster)`);
  }
  const serviceDir = `/app/services/${options.service}`;
  if (config.workdir !== serviceDir) {
    problems.push(
      `${at}: WORKDIR is ${config.workdir || "empty"}; run from the service's folder ${serviceDir} (the layout under /app mirrors the repository)`,
    );
  }
  const title = config.labels["org.opencontainers.image.title"];
  if (title !== `thinmesh-${options.service}`) {
    problems.push(
      `${at}: the label org.opencontainers.image.title is ${JSON.stringify(title)}; name the service: thinmesh-${options.service}`,
    );
  }

  for (const form of config.shellForm) {
    problems.push(
      `${at}: ${form.split(" ")[0]} in the shell form runs under /bin/sh, which does not pass SIGTERM on; use the exec form ["node", …]`,
    );
  }
  if (config.entrypoint === undefined) {
    problems.push(
      `${at} inherits ENTRYPOINT from ${config.baseImage}; reset it (ENTRYPOINT []) so CMD is exactly what runs`,
    );
  }
  const argv = imageArgv(config);
  if (!config.cmd || argv.length === 0) {
    problems.push(`${at} has no CMD`);
  } else {
    const command = argv.join(" ");
    if (!/^(\/usr\/local\/bin\/)?node$/.test(argv[0]!)) {
      problems.push(
        `${at}: the image runs ${JSON.stringify(argv[0])}, not node (package managers do not forward signals and write to the filesystem): ${command}`,
      );
    }
    if (
      /\b(tsx|ts-node|esno|swc-node)\b|--experimental-(strip|transform)-types|--loader|\.([mc]?ts)(\s|$)/.test(
        command,
      )
    ) {
      problems.push(`${at}: the image runs TypeScript (${command}); run the compiled JavaScript`);
    }
    const script = argv.slice(1).find((arg) => !arg.startsWith("-"));
    if (!script) {
      problems.push(`${at}: CMD names no script: ${command}`);
    } else {
      const inRepo = posix.relative("/app", posix.resolve(config.workdir, script));
      if (inRepo.startsWith("..") || !existsSync(join(root, inRepo))) {
        problems.push(
          `${at}: CMD runs ${script}, which ${inRepo.startsWith("..") ? "is outside /app" : `is not there after npm run build (${inRepo})`}`,
        );
      } else if (!inRepo.startsWith(`services/${options.service}/dist/`)) {
        problems.push(
          `${at}: CMD runs ${inRepo}, not the ${options.service} service's compiled code (services/${options.service}/dist/)`,
        );
      }
    }
  }

  for (const stage of dockerfile.stages) {
    for (const instruction of stage.instructions) {
      if (instruction.keyword === "ADD") {
        problems.push(`line ${instruction.line}: use COPY (ADD fetches URLs and unpacks archives)`);
      }
      if (instruction.keyword !== "COPY" || instruction.flags.from !== undefined) continue;
      const sources = (instruction.json ?? words(instruction.args)).slice(0, -1);
      if (sources.length === 0) problems.push(`line ${instruction.line}: COPY without a source`);
      for (const source of sources) {
        const rel = posix
          .normalize(source)
          .replace(/^\.?\/+/, "")
          .replace(/\/$/, "");
        if (rel.startsWith("..")) {
          problems.push(`line ${instruction.line}: COPY ${source} is outside the build context`);
        } else if (/[*?[]/.test(rel)) {
          problems.push(`line ${instruction.line}: COPY ${source}: name the files (no wildcards)`);
        } else if (!existsSync(join(root, rel))) {
          problems.push(`line ${instruction.line}: COPY ${source}: no such file in the repository`);
        } else if (rel !== "." && isIgnored(rel, rules)) {
          problems.push(
            `line ${instruction.line}: COPY ${source}: excluded from the build context by .dockerignore`,
          );
        } else if (
          statSync(join(root, rel)).isDirectory() &&
          contextFiles(rel, rules, root).length === 0
        ) {
          problems.push(
            `line ${instruction.line}: COPY ${source}: every file in it is excluded by .dockerignore`,
          );
        }
      }
    }
  }

  problems.push(...dependencyProblems(dockerfile, final, options.service, root));
  return problems;
}

/** ENTRYPOINT + CMD: what the container runs. */
export function imageArgv(config: ImageConfig): string[] {
  return [...(config.entrypoint ?? []), ...(config.cmd ?? [])];
}

/**
 * A Node.js LTS image at 22 or later, pinned to at least major.minor; slim (or distroless or
 * alpine) where it is the image's base.
 */
function nodeImageProblem(image: string, isImageBase: boolean): string | undefined {
  const distroless = image.match(/^gcr\.io\/distroless\/nodejs(\d+)-debian\d+(?::[\w.-]+)?$/);
  if (distroless) return ltsProblem(Number(distroless[1]));
  const node = image.match(
    /^(?:docker\.io\/)?(?:library\/)?node:(\d+)(?:\.(\d+))?(?:\.\d+)?(?:-([\w.-]+))?(?:@sha256:[\da-f]{64})?$/,
  );
  if (!node) return "not an official Node.js image (node:<version>-slim or distroless nodejs)";
  const lts = ltsProblem(Number(node[1]));
  if (lts) return lts;
  if (node[2] === undefined)
    return "pin at least major.minor (node:24.11-…), not a moving major tag";
  if (isImageBase && !/slim|alpine/.test(node[3] ?? "")) {
    return "the image's base should be a slim (or alpine/distroless) variant";
  }
  return undefined;
}

function ltsProblem(major: number): string | undefined {
  if (major < 22) return `Node.js ${major} is past its end of life or too old; use 22 or 24 (LTS)`;
  if (major % 2 === 1) return `Node.js ${major} is not an LTS line (only even majors are)`;
  return undefined;
}

/**
 * The image's node_modules must come from an `npm ci --omit=dev` of this service's workspace,
 * with every workspace it depends on present in that stage, and no TypeScript sources may reach
 * the final image.
 */
function dependencyProblems(
  dockerfile: Dockerfile,
  final: Stage,
  service: string,
  root: string,
): string[] {
  const problems: string[] = [];
  const workspace = `services/${service}`;
  const needed = workspaceClosure(workspace, root);
  const finalStages = chain(final);
  const finalCopies = finalStages.flatMap((s) =>
    s.instructions.filter((i) => i.keyword === "COPY"),
  );
  const installStages = new Set<Stage>();

  for (const copy of finalCopies) {
    const fromStage = dockerfile.stages.find((s) => s.name === copy.flags.from);
    const sources = (copy.json ?? words(copy.args)).slice(0, -1);
    if (!copy.flags.from && sources.some((s) => /(^|\/)src\/?$/.test(s))) {
      problems.push(
        `line ${copy.line}: the final image gets TypeScript sources (${sources.join(" ")})`,
      );
    }
    if (!fromStage) continue;
    const install = chain(fromStage)
      .flatMap((s) => s.instructions)
      .find((i) => i.keyword === "RUN" && /\bnpm (ci|install)\b/.test(i.args));
    if (install && sources.some((s) => s === "/app" || s === "/app/" || /node_modules/.test(s))) {
      installStages.add(fromStage);
      const args = install.args;
      if (!/--omit[= ]dev\b|--production\b/.test(args)) {
        problems.push(
          `line ${install.line}: the image's node_modules come from an install with dev dependencies; add --omit=dev`,
        );
      }
      if (
        !new RegExp(`--workspace[= ](\\./)?${workspace}\\b|-w (\\./)?${workspace}\\b`).test(args)
      ) {
        problems.push(
          `line ${install.line}: install only this service's workspace (npm ci --omit=dev --workspace ${workspace})`,
        );
      }
    }
  }
  if (installStages.size === 0) {
    problems.push("the final stage copies no node_modules from an npm ci stage");
  }

  for (const stage of dockerfile.stages) {
    const installs = stage.instructions.some(
      (i) => i.keyword === "RUN" && /\bnpm ci\b/.test(i.args),
    );
    if (!installs) continue;
    const copied = new Set(
      chain(stage)
        .flatMap((s) => s.instructions)
        .filter((i) => i.keyword === "COPY" && !i.flags.from)
        .flatMap((i) => {
          const all = i.json ?? words(i.args);
          return all.slice(0, -1).map((source) => posix.normalize(source).replace(/\/$/, ""));
        }),
    );
    for (const file of ["package.json", "package-lock.json"]) {
      if (!copied.has(file))
        problems.push(`stage ${stage.name ?? stage.index} runs npm ci without ${file}`);
    }
    // npm ci --ignore-scripts skips the root's postinstall, which applies patches/: the stage
    // must apply them itself, or the image runs the unpatched dependencies.
    const skipsScripts = stage.instructions.some(
      (i) => i.keyword === "RUN" && /\bnpm ci\b[^&|;]*--ignore-scripts/.test(i.args),
    );
    if (skipsScripts && hasPatches(root)) {
      const applies = stage.instructions.some(
        (i) => i.keyword === "RUN" && /\bpatch-package\b/.test(i.args),
      );
      if (!applies || !copied.has("patches")) {
        problems.push(
          `stage ${stage.name ?? stage.index} installs with --ignore-scripts but does not apply patches/ (COPY patches/ patches/, then patch-package --error-on-fail)`,
        );
      }
    }
    for (const dependency of needed) {
      if (!copied.has(`${dependency}/package.json`)) {
        problems.push(
          `stage ${stage.name ?? stage.index} runs npm ci without ${dependency}/package.json (a workspace ${workspace} depends on)`,
        );
      }
    }
  }
  return problems;
}

/** Whether the repository patches dependencies at install (patches/*.patch, patch-package). */
function hasPatches(root: string): boolean {
  const dir = join(root, "patches");
  return existsSync(dir) && readdirSync(dir).some((f) => f.endsWith(".patch"));
}

/** The workspace and the workspaces it depends on, transitively (by @thinmesh/* names). */
export function workspaceClosure(workspace: string, root = repoRoot): string[] {
  const rootPackage = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as {
    workspaces?: string[];
  };
  const byName = new Map<string, string>();
  for (const pattern of rootPackage.workspaces ?? []) {
    const dirs = pattern.endsWith("/*")
      ? readdirSync(join(root, pattern.slice(0, -2)), { withFileTypes: true })
          .filter((e) => e.isDirectory())
          .map((e) => posix.join(pattern.slice(0, -2), e.name))
      : [pattern];
    for (const dir of dirs) {
      const file = join(root, dir, "package.json");
      if (existsSync(file)) byName.set(JSON.parse(readFileSync(file, "utf8")).name, dir);
    }
  }
  const seen = new Set<string>();
  const visit = (dir: string) => {
    if (seen.has(dir)) return;
    seen.add(dir);
    const pkg = JSON.parse(readFileSync(join(root, dir, "package.json"), "utf8")) as {
      dependencies?: Record<string, string>;
    };
    for (const name of Object.keys(pkg.dependencies ?? {})) {
      const dependency = byName.get(name);
      if (dependency) visit(dependency);
    }
  };
  visit(workspace);
  return [...seen];
}

/**
 * The services that ship an image: every workspace under services/ (a folder with a
 * package.json), each built from the one Dockerfile with --build-arg SERVICE=<name>.
 */
export function servicesWithImages(root = repoRoot): string[] {
  return readdirSync(join(root, "services"), { withFileTypes: true })
    .filter((e) => e.isDirectory() && existsSync(join(root, "services", e.name, "package.json")))
    .map((e) => e.name)
    .sort();
}
