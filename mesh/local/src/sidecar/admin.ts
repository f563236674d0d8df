import http from "node:http";
import type { AddressInfo } from "node:net";
import type { EndpointRegistry } from "./instances.js";
import type { AccessRecord, Telemetry } from "./telemetry.js";

/** The most recent access records, for tools that want the hops themselves (the console). */
export class RecentRecords {
  // A ring: once full, each record replaces the oldest in place. (A splice per record moved
  // the whole array on every request the mesh proxied.)
  readonly #records: AccessRecord[] = [];
  #next = 0;
  constructor(private readonly capacity = 2_000) {}
  add(record: AccessRecord) {
    if (this.#records.length < this.capacity) this.#records.push(record);
    else this.#records[this.#next] = record;
    this.#next = (this.#next + 1) % this.capacity;
  }
  /** Oldest first. */
  list(): readonly AccessRecord[] {
    if (this.#records.length < this.capacity) return this.#records;
    return [...this.#records.slice(this.#next), ...this.#records.slice(0, this.#next)];
  }
}

/**
 * mesh/local's admin listener, in the spirit of Envoy's: `/stats/prometheus` (Istio's
 * standard metrics, as Prometheus scrapes them from the sidecars in a cluster), `/endpoints`
 * (each instance, its identity, address and readiness) and `/access` (recent access records,
 * newest last; `?trace=<id>` keeps one trace's). Loopback only.
 */
export function createAdmin(options: {
  telemetry: Telemetry;
  endpoints: EndpointRegistry;
  recent: RecentRecords;
}) {
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url ?? "/", "http://admin");
    const json = (value: unknown) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify(value, null, 2));
    };
    if (req.method !== "GET") {
      res.writeHead(405, { allow: "GET" }).end();
      return;
    }
    switch (url.pathname) {
      case "/stats/prometheus": {
        res.writeHead(200, { "content-type": options.telemetry.registry.contentType });
        res.end(await options.telemetry.registry.metrics());
        return;
      }
      case "/endpoints":
        return json(
          options.endpoints.all().map(({ instance, host, port, ready }) => ({
            id: instance.id,
            workload: instance.app,
            version: instance.version,
            principal: instance.principal,
            inbound: `${host}:${port}`,
            ready,
          })),
        );
      case "/access": {
        const trace = url.searchParams.get("trace");
        return json(options.recent.list().filter((r) => !trace || r.trace_id === trace));
      }
      default:
        res.writeHead(404, { "content-type": "text/plain" });
        res.end("not found: try /stats/prometheus, /endpoints or /access\n");
    }
  });
  return {
    listen: (port: number, host: string) =>
      new Promise<AddressInfo>((resolve, reject) => {
        server.once("error", reject);
        server.listen(port, host, () => resolve(server.address() as AddressInfo));
      }),
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
