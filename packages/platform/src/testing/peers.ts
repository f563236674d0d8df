import { createServer, type RequestListener } from "node:http";
import type { AddressInfo } from "node:net";
import type { ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";

/** A server a test started on loopback: its base URL (no trailing slash) and a way to stop it. */
export interface TestServer {
  url: string;
  /** Drops open connections and stops listening. */
  close(): Promise<void>;
}

/** Serves a plain Node request handler on a free port on 127.0.0.1. */
export async function startTestHttpServer(handler: RequestListener): Promise<TestServer> {
  const server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/**
 * A stand-in for a peer service in a test: the Connect services `routes` registers, served
 * (Connect, gRPC and gRPC-Web over HTTP/1.1) on a free port on 127.0.0.1.
 */
export function startFakePeer(routes: (router: ConnectRouter) => void): Promise<TestServer> {
  return startTestHttpServer(connectNodeAdapter({ routes }));
}
