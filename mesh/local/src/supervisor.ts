import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";

export interface ProcessSpec {
  name: string;
  /** node arguments, e.g. ["services/auth/dist/main.js"]. */
  args: string[];
  env: Record<string, string>;
  cwd: string;
}

export interface SupervisorEvents {
  line(name: string, line: string): void;
  event(name: string, message: string, fields: Record<string, unknown>): void;
}

export interface Supervised {
  readonly name: string;
  pid(): number | undefined;
  /** SIGTERM, then SIGKILL after graceMs; no restart until start(). */
  stop(graceMs?: number): Promise<void>;
  /** Starts a stopped workload again. */
  start(): void;
}

/**
 * Runs a workload like a pod: a crash is logged and the process restarted with a growing
 * delay (reset once it has run for 30 s); stop() ends it for good.
 */
export function supervise(spec: ProcessSpec, events: SupervisorEvents): Supervised {
  let child: ChildProcess | undefined;
  let stopping = false;
  let restarts = 0;
  let restartTimer: NodeJS.Timeout | undefined;

  function run() {
    const startedAt = Date.now();
    const current = spawn(process.execPath, spec.args, {
      cwd: spec.cwd,
      env: { ...process.env, ...spec.env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    child = current;
    events.event(spec.name, "process started", { pid: current.pid });
    createInterface({ input: current.stdout! }).on("line", (line) => events.line(spec.name, line));
    createInterface({ input: current.stderr! }).on("line", (line) => events.line(spec.name, line));
    current.on("exit", (code, signal) => {
      if (child === current) child = undefined;
      if (stopping) return;
      restarts = Date.now() - startedAt > 30_000 ? 0 : restarts + 1;
      const delay = Math.min(500 * 2 ** restarts, 15_000);
      events.event(spec.name, "process exited; restarting", {
        exit: signal ?? code,
        restartInMs: delay,
      });
      restartTimer = setTimeout(run, delay);
    });
  }
  run();

  return {
    name: spec.name,
    pid: () => child?.pid,
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
      if (!current || current.exitCode !== null) return;
      const exited = new Promise<void>((resolve) => current.once("exit", () => resolve()));
      current.kill("SIGTERM");
      const force = setTimeout(() => current.kill("SIGKILL"), graceMs);
      await exited;
      clearTimeout(force);
    },
  };
}
