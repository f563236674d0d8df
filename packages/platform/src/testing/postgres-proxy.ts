import { type AddressInfo, connect, createServer, type Socket } from "node:net";

/**
 * A TCP proxy to a Postgres server that tests switch on and off, to play a database that is
 * down, stops (every connection cut) or comes back. Starts off: nothing listens on its port.
 */
export async function switchablePostgresProxy(target: URL) {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve())); // down: nothing listens
  const sockets = new Set<Socket>();
  const up = createServer((client) => {
    const upstream = connect(Number(target.port || 5432), target.hostname);
    sockets.add(client).add(upstream);
    client.once("close", () => sockets.delete(client));
    upstream.once("close", () => sockets.delete(upstream));
    client.pipe(upstream).pipe(client);
    client.on("error", () => upstream.destroy());
    upstream.on("error", () => client.destroy());
  });
  return {
    port,
    /** The target URL with this proxy's port. */
    url(of: URL = target) {
      const proxied = new URL(of);
      proxied.port = String(port);
      return proxied.toString();
    },
    start: () => new Promise<void>((resolve) => up.listen(port, "127.0.0.1", resolve)),
    /** Stops listening and cuts every connection, as a stopping server does. */
    stop: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        if (up.listening) up.close(() => resolve());
        else resolve();
      }),
  };
}
