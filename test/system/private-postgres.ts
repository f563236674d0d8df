// A Postgres cluster of a test's own, so that a test may stop and restart it: never the
// machine's shared server, which other tests and sessions use. It listens on no TCP port at
// all, only on a Unix socket in its own directory (DATABASE_URL …?host=<dir>).
import { execFileSync } from "node:child_process";
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface PrivatePostgres {
  /** postgres://…/postgres?host=<socket dir>: a server URL for startLocalShop. */
  url: string;
  /** Stops the server (fast shutdown: sessions are ended, as in a restart). */
  stop(): void;
  /** Starts it again and waits until it accepts connections. */
  start(): void;
  /** Stops it for good and removes its files. */
  destroy(): void;
}

/** The newest PostgreSQL server binaries installed (Debian/Ubuntu layout), if any. */
export function postgresBinaries(): string | undefined {
  const root = "/usr/lib/postgresql";
  if (!existsSync(root)) return undefined;
  const versions = readdirSync(root)
    .filter((v) => existsSync(join(root, v, "bin", "pg_ctl")))
    .sort((a, b) => Number(b) - Number(a));
  return versions[0] && join(root, versions[0], "bin");
}

/** Why no private cluster can run here, or undefined when one can. */
export function privatePostgresUnavailable(): string | undefined {
  if (!postgresBinaries())
    return "no PostgreSQL server binaries under /usr/lib/postgresql to run a private cluster";
  if (process.getuid?.() === 0 && !hasUser("postgres"))
    return "running as root and there is no postgres user to run a private cluster as";
  return undefined;
}

function hasUser(name: string) {
  try {
    execFileSync("id", ["-u", name], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

/**
 * initdb + pg_ctl start on a fresh directory. Postgres refuses to run as root: as root it runs
 * as user postgres (runuser), otherwise as the current user. Durability is switched off: the
 * data is thrown away after the test, and the machine is shared.
 */
export function startPrivatePostgres(): PrivatePostgres {
  const bin = postgresBinaries();
  if (!bin) throw new Error(privatePostgresUnavailable());
  const dir = mkdtempSync(join(tmpdir(), "thinmesh-pg-"));
  const data = join(dir, "data");
  const asRoot = process.getuid?.() === 0;
  if (asRoot) chownSync(dir, Number(execFileSync("id", ["-u", "postgres"])), 0);
  const run = (tool: string, args: string[]) =>
    execFileSync(
      asRoot ? "runuser" : join(bin, tool),
      asRoot ? ["-u", "postgres", "--", join(bin, tool), ...args] : args,
      { stdio: ["ignore", "pipe", "pipe"], cwd: dir, timeout: 60_000 },
    );
  const options = [
    "-c listen_addresses=''",
    `-c unix_socket_directories='${dir}'`,
    "-c fsync=off",
    "-c synchronous_commit=off",
    "-c full_page_writes=off",
    "-c max_connections=200",
  ].join(" ");
  const pgCtl = (...args: string[]) => run("pg_ctl", ["-D", data, ...args]);
  try {
    run("initdb", ["-D", data, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"]);
    pgCtl("-o", options, "-l", join(dir, "log"), "-w", "-t", "60", "start");
  } catch (error) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`cannot start a private Postgres in ${dir}: ${failure(error)}`);
  }
  let running = true;
  return {
    url: `postgres://postgres@localhost/postgres?host=${encodeURIComponent(dir)}`,
    stop() {
      pgCtl("-m", "fast", "-w", "-t", "60", "stop");
      running = false;
    },
    start() {
      pgCtl("-o", options, "-l", join(dir, "log"), "-w", "-t", "60", "start");
      running = true;
    },
    destroy() {
      if (running) {
        try {
          pgCtl("-m", "immediate", "-w", "-t", "60", "stop");
        } catch (error) {
          console.warn(`private Postgres in ${dir} did not stop: ${failure(error)}`);
        }
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function failure(error: unknown) {
  const stderr = (error as { stderr?: Buffer }).stderr?.toString().trim();
  return stderr || (error as Error).message;
}
