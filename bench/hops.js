#!/usr/bin/env node
// Where a PlaceOrder's time goes, hop by hop, through the sidecars: one shop as `npm start`
// runs it, on the real Postgres (its own databases, dropped at the end), orders placed at
// --rate per second for --seconds, then for every PlaceOrder whose trace holds all four proxy
// records (the gateway, order's inbound side, order's outbound listener for GetProducts,
// catalog's inbound side) the time each proxy kept it (`duration − upstream_service_time`),
// the gaps between proxies and the apps' own time, with each app's mean handler time
// (rpc_server_duration_seconds from its /metrics) beside them. Usage (after npm run build):
//   node bench/hops.js [--rate 50] [--seconds 20] [--concurrency 32] [--bypass-sidecars]
// --bypass-sidecars runs the same load without the sidecars: only the apps' handler times and
// the client's latency then (the gateway's record alone has no hops to split). Last, the
// event-loop delay of mesh/local's thread (this process) while placing: how long a request
// ready to be read waits for the one thread every proxy shares.
import { monitorEventLoopDelay } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { get } from "./http.js";
import { startLoad } from "./load.js";
import { percentile, prepareCustomers, startSagaShop } from "./saga.js";
import { appBases, machine } from "./shop.js";

const { values } = parseArgs({
  options: {
    rate: { type: "string", default: "50" },
    seconds: { type: "string", default: "20" },
    concurrency: { type: "string", default: "32" },
    "bypass-sidecars": { type: "boolean", default: false },
    help: { type: "boolean", short: "h", default: false },
  },
});
if (values.help) {
  console.log(`usage: node bench/hops.js [--rate 50] [--seconds 20] [--concurrency 32] [--bypass-sidecars]
(see bench/README.md)`);
  process.exit(0);
}
const rate = Number(values.rate);
const seconds = Number(values.seconds);
const concurrency = Number(values.concurrency);
const invalid = [
  !(rate > 0) && `--rate must be above 0 (orders/s), got ${values.rate}`,
  !(seconds > 0) && `--seconds must be above 0, got ${values.seconds}`,
  !(Number.isInteger(concurrency) && concurrency > 0) &&
    `--concurrency must be a whole number above 0, got ${values.concurrency}`,
].filter(Boolean);
if (invalid.length > 0) throw new Error(invalid.join("; "));
const bypassSidecars = values["bypass-sidecars"];

const records = [];
let recording = false;
const bench = await startSagaShop("hops", {
  bypassSidecars,
  onRecord: (record) => recording && records.push(record),
});
const load = startLoad();
try {
  const customers = await prepareCustomers(bench.shop, concurrency);
  recording = true;
  // How long a ready callback waits for this process's thread: the mesh's (gateway and sidecars).
  const meshLoop = monitorEventLoopDelay({ resolution: 1 });
  meshLoop.enable();
  const placed = await load.place({
    base: bench.shop.ingressUrl,
    rate,
    seconds,
    concurrency,
    products: customers.products,
    users: customers.users,
  });
  recording = false;
  meshLoop.disable();
  const latencies = placed.latencies.sort((a, b) => a - b);
  console.log(
    `${placed.latencies.length} orders at ${rate}/s ${bypassSidecars ? "with the sidecars bypassed" : "through the sidecars"}; ${machine()}`,
  );
  console.log(
    `client: PlaceOrder p50 ${percentile(latencies, 50).toFixed(1)} ms, p90 ${percentile(latencies, 90).toFixed(1)} ms`,
  );
  if (!bypassSidecars) printHops(records);
  await printHandlerTimes(bench.shop);
  // Beyond the monitor's 1 ms resolution.
  const ms = (ns) => Math.max(0, ns / 1e6 - 1).toFixed(1);
  console.log(
    `\nevent-loop delay of mesh/local's thread while placing: p50 ${ms(meshLoop.percentile(50))} ms, p90 ${ms(meshLoop.percentile(90))} ms, p99 ${ms(meshLoop.percentile(99))} ms, max ${ms(meshLoop.max)} ms`,
  );
} finally {
  await load.close();
  await bench.close();
}

/** Per PlaceOrder trace: each proxy's own time, the gaps between them, the apps' time. */
function printHops(all) {
  const byTrace = new Map();
  for (const record of all) {
    if (!record.trace_id) continue;
    if (!byTrace.has(record.trace_id)) byTrace.set(record.trace_id, []);
    byTrace.get(record.trace_id).push(record);
  }
  const columns = new Map();
  const add = (name, value) => {
    if (!columns.has(name)) columns.set(name, []);
    columns.get(name).push(value);
  };
  const own = (r) => r.duration - (r.upstream_service_time ?? r.duration);
  for (const hops of byTrace.values()) {
    const find = (reporter, workload, method) =>
      hops.find(
        (r) =>
          r.reporter === reporter &&
          (reporter === "source" ? r.source_workload : r.destination_workload) === workload &&
          r.path.endsWith(method),
      );
    const gateway = find("source", "istio-ingressgateway", "/PlaceOrder");
    const orderIn = find("destination", "order", "/PlaceOrder");
    const orderOut = find("source", "order", "/GetProducts");
    const catalogIn = find("destination", "catalog", "/GetProducts");
    if (!gateway || !orderIn || !orderOut || !catalogIn) continue;
    add("gateway, whole request", gateway.duration);
    add("gateway's own time", own(gateway));
    add("gateway → order's inbound side", gateway.upstream_service_time - orderIn.duration);
    add("order's inbound side's own time", own(orderIn));
    add("order app, less GetProducts", orderIn.upstream_service_time - orderOut.duration);
    add("order's outbound listener's own time", own(orderOut));
    add(
      "order's outbound → catalog's inbound",
      orderOut.upstream_service_time - catalogIn.duration,
    );
    add("catalog's inbound side's own time", own(catalogIn));
    add("catalog app (GetProducts)", catalogIn.upstream_service_time);
  }
  const traces = columns.get("gateway, whole request")?.length ?? 0;
  console.log(
    `\nper PlaceOrder (${traces} with all four proxy records; access records are whole ms):`,
  );
  console.log(`${"".padEnd(40)}  p50     mean    p90`);
  for (const [name, list] of columns) {
    const sorted = list.sort((a, b) => a - b);
    const mean = sorted.reduce((sum, x) => sum + x, 0) / sorted.length;
    console.log(
      `${name.padEnd(40)}  ${String(percentile(sorted, 50)).padEnd(6)}  ${mean.toFixed(2).padEnd(6)}  ${percentile(sorted, 90)}`,
    );
  }
}

/** Each app's mean handler time per RPC (its rpc_server_duration_seconds), past the mesh. */
async function printHandlerTimes(shop) {
  console.log(
    "\nthe apps' own handler time (rpc_server_duration_seconds, mean) and event-loop delay (since start):",
  );
  for (const { instance, base } of await appBases(shop)) {
    const text = await get(base, "metrics");
    const sums = new Map();
    for (const [, kind, labels, value] of text.matchAll(
      /^rpc_server_duration_seconds_(sum|count)\{([^}]*)\} (\S+)$/gm,
    )) {
      const method = /method="([^"]+)"/.exec(labels)?.[1];
      if (!method) continue;
      const entry = sums.get(method) ?? { sum: 0, count: 0 };
      entry[kind] += Number(value);
      sums.set(method, entry);
    }
    const parts = [...sums]
      .filter(([, { count }]) => count > 0)
      .map(
        ([method, { sum, count }]) =>
          `${method.split("/").pop()} ${((sum / count) * 1000).toFixed(2)} ms ×${count}`,
      );
    // prom-client samples the loop every 100 ms (the platform's eventLoopMonitoringPrecision);
    // what it reports beyond that interval is the delay.
    const lag = (q) => {
      const value = new RegExp(
        `^nodejs_eventloop_lag_${q}_seconds(?:\\{[^}]*\\})? (\\S+)$`,
        "m",
      ).exec(text)?.[1];
      return value === undefined ? "?" : Math.max(0, Number(value) * 1000 - 100).toFixed(1);
    };
    parts.push(`event-loop delay p50 ${lag("p50")} / p90 ${lag("p90")} / p99 ${lag("p99")} ms`);
    console.log(`  ${instance}: ${parts.join(", ")}`);
  }
}
