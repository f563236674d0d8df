import { chmodSync, rmSync } from "node:fs";
import net from "node:net";
import { getSystemErrorName } from "node:util";

/** A TCP port bound by this process and held for a child process to listen on. */
export interface ReservedPort {
  readonly host: string;
  readonly port: number;
  /** The bound socket's file descriptor, to hand to a child (spawn's stdio). */
  readonly fd: number;
  release(): void;
}

interface BoundHandle {
  readonly fd: number;
  getsockname(out: { port?: number }): number;
  close(): void;
}
type CreateServerHandle = (
  address: string,
  port: number,
  addressType: number,
) => BoundHandle | number;

// The primitive Node's cluster module uses for handles its workers share: a socket that is
// bound but not listening. This process never accepts on it (a listening net.Server would
// take some of the child's connections); the child listens on it, and because this process
// keeps it bound, the port stays reserved while a crashed child restarts, and no outgoing
// connection can take it as its ephemeral port (Linux skips bound ports).
const createServerHandle = (net as unknown as { _createServerHandle?: CreateServerHandle })
  ._createServerHandle;

/**
 * Binds a Unix socket at path (replacing a stale one) for a child to listen on: the apps behind
 * their sidecars listen on nothing else, so no other workload reaches them over the network.
 */
export function reserveUnixSocket(path: string): {
  readonly path: string;
  readonly fd: number;
  release(): void;
} {
  if (typeof createServerHandle !== "function") {
    throw new Error(
      `Node ${process.version} has no net._createServerHandle, which mesh/local uses to bind the services' sockets`,
    );
  }
  rmSync(path, { force: true });
  // port -1 and address type -1: a pipe (Unix socket) bound at `path`.
  const handle = createServerHandle(path, -1, -1);
  if (typeof handle === "number") {
    throw new Error(`cannot bind the Unix socket ${path}: ${getSystemErrorName(handle)}`);
  }
  chmodSync(path, 0o600);
  let released = false;
  return {
    path,
    fd: handle.fd,
    release() {
      if (released) return;
      released = true;
      handle.close();
      rmSync(path, { force: true });
    },
  };
}

/** Binds host:0 and returns the port the operating system assigned. */
export function reservePort(host: string): ReservedPort {
  if (typeof createServerHandle !== "function") {
    throw new Error(
      `Node ${process.version} has no net._createServerHandle, which mesh/local uses to bind the services' ports; run it on Node 20, 22 or 24`,
    );
  }
  const handle = createServerHandle(host, 0, net.isIPv6(host) ? 6 : 4);
  if (typeof handle === "number") {
    throw new Error(`cannot bind a port on ${host}: ${getSystemErrorName(handle)}`);
  }
  const address: { port?: number } = {};
  const status = handle.getsockname(address);
  if (status !== 0 || !address.port) {
    handle.close();
    throw new Error(`cannot read the port bound on ${host}: ${getSystemErrorName(status)}`);
  }
  let released = false;
  return {
    host,
    port: address.port,
    fd: handle.fd,
    release() {
      if (released) return;
      released = true;
      handle.close();
    },
  };
}
