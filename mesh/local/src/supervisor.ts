import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";

export interface ProcessSpec {
  name: string;
  /** node arguments, e.g. ["services/auth/dist/main.js"]. */
  args: string[];
  env: Record<string, string>;
  cwd: string;
  /** A bound socket the workload listens on; it gets it as fd LISTEN_FD (its port is known up front). */
  listenFd?: number;
}

export interface SupervisorEvents {
  /** One log record of a workload: its own JSON line, or one made of its raw stderr output. */
  line(name: string, line: string): void;
  event(name: string, message: string, fields: Record<string, unknown>): void;
  /** A workload's process ended (before any restart). */
  exited?(name: string, code: number | null, signal: NodeJS.Signals | null): void;
}

export interface Supervised {
  readonly name: string;
  pid(): number | undefined;
  /** The last error or warning the workload reported, as one line. */
  lastProblem(): string | undefined;
  /** SIGTERM, then SIGKILL after graceMs; no restart until start(). */
  stop(graceMs?: number): Promise<void>;
  /** Starts a stopped workload again. */
  start(): void;
}

// The child's fds: stdin, stdout, stderr, the IPC channel, then the listening socket.
const listenFdInChild = 4;
// Raw stderr lines that arrive together (a stack trace) form one record.
const stderrQuietMs = 50;

/**
 * Runs a workload like a pod: a crash is logged and the process restarted with a growing
 * delay (reset once it has run for 30 s); stop() ends it for good. Each child gets an IPC
 * channel, which closes when this process ends however it ends: the workload exits then
 * (packages/platform's runMain), so no workload outlives its supervisor.
 */
export function supervise(spec: ProcessSpec, events: SupervisorEvents): Supervised {
  let child: ChildProcess | undefined;
  let stopping = false;
  let restarts = 0;
  let restartTimer: NodeJS.Timeout | undefined;
  let lastProblem: string | undefined;

  function run() {
    const startedAt = Date.now();
    const listening = spec.listenFd === undefined ? [] : [spec.listenFd];
    const current = spawn(process.execPath, spec.args, {
      cwd: spec.cwd,
      env: {
        ...process.env,
        ...spec.env,
        ...(listening.length ? { LISTEN_FD: String(listenFdInChild) } : {}),
      },
      stdio: ["ignore", "pipe", "pipe", "ipc", ...listening],
    });
    child = current;
    events.event(spec.name, "process started", { pid: current.pid });
    const stderr = rawOutput((record) => {
      lastProblem = record.msg;
      const { level, time, ...rest } = record;
      events.line(spec.name, JSON.stringify({ level, time, service: spec.name, ...rest }));
    });
    createInterface({ input: current.stdout! }).on("line", (line) => {
      const problem = problemIn(line);
      if (problem) lastProblem = problem;
      events.line(spec.name, line);
    });
    createInterface({ input: current.stderr! }).on("line", (line) => {
      const problem = problemIn(line);
      if (problem === undefined && !line.startsWith("{")) return stderr.add(line);
      stderr.flush();
      if (problem) lastProblem = problem;
      events.line(spec.name, line);
    });
    current.on("error", (error) => {
      lastProblem = `cannot start: ${error.message}`;
      events.event(spec.name, "process failed to start", { err: error.message });
    });
    current.on("exit", (code, signal) => {
      stderr.flush();
      if (child === current) child = undefined;
      events.exited?.(spec.name, code, signal);
      if (stopping) return;
      restarts = Date.now() - startedAt > 30_000 ? 0 : restarts + 1;
      const delay = Math.min(500 * 2 ** restarts, 15_000);
      events.event(spec.name, "process exited; restarting", {
        exit: signal ?? code,
        restartInMs: delay,
        ...(lastProblem ? { lastProblem } : {}),
      });
      restartTimer = setTimeout(run, delay);
    });
  }
  run();

  return {
    name: spec.name,
    pid: () => child?.pid,
    lastProblem: () => lastProblem,
    start() {
      if (!stopping) return;
      stopping = false;
      restarts = 0;
      run();
    },
    async stop(graceMs = 15_000) {
      stopping = true;
      clearTimeout(restartTimer);
      const current = child;
      if (!current || current.exitCode !== null || current.signalCode !== null) return;
      const exited = new Promise<void>((resolve) => current.once("exit", () => resolve()));
      current.kill("SIGTERM");
      const force = setTimeout(() => current.kill("SIGKILL"), graceMs);
      await exited;
      clearTimeout(force);
    },
  };
}

/** The message of a JSON log line at level warn or above. */
function problemIn(line: string): string | undefined {
  if (!line.startsWith("{")) return undefined;
  try {
    const record = JSON.parse(line);
    if (!["warn", "error", "fatal"].includes(record.level)) return undefined;
    const err = record.err;
    const cause = typeof err === "string" ? err : err?.message;
    return [record.msg, cause].filter(Boolean).join(": ") || undefined;
  } catch {
    return undefined;
  }
}

export interface RawOutputRecord {
  level: "error";
  time: string;
  msg: string;
  /** Every line, as the process wrote them. */
  stderr: string;
}

/**
 * Collects a workload's raw stderr lines (a Node stack trace, a config error) into one record
 * whose message is the error's own line ("Error: boom"), emitted once the lines stop coming.
 */
export function rawOutput(emit: (record: RawOutputRecord) => void) {
  let lines: string[] = [];
  let timer: NodeJS.Timeout | undefined;
  const flush = () => {
    clearTimeout(timer);
    timer = undefined;
    const text = lines.filter((l) => l.trim() !== "");
    lines = [];
    if (text.length === 0) return;
    emit({
      level: "error",
      time: new Date().toISOString(),
      msg: summary(text),
      stderr: text.join("\n"),
    });
  };
  return {
    add(line: string) {
      lines.push(line);
      clearTimeout(timer);
      timer = setTimeout(flush, stderrQuietMs);
    },
    flush,
  };
}

/**
 * What a block of stderr says went wrong, on one line: a thrown error's "Name: message" line
 * (not the source excerpt and stack Node prints around it), else the lines joined.
 */
export function summary(lines: string[]): string {
  const thrown = lines.find((l) => /^(\w*(Error|Exception)\b|Uncaught\b)/.test(l.trim()));
  if (thrown) return thrown.trim();
  const text = lines.map((l) => l.trim()).join(" ");
  return text.length > 300 ? `${text.slice(0, 299)}…` : text;
}
