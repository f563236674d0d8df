import { Counter, collectDefaultMetrics, Histogram, Registry } from "prom-client";

export interface Metrics {
  registry: Registry;
  rpcHandled: Counter<"method" | "code">;
  rpcDuration: Histogram<"method">;
  /** The relay's calls to EventSink.Deliver: events per call, by subscriber. */
  outboxBatchEvents: Histogram<"subscriber">;
  /** What became of each event sent: accepted, retry (will be sent again) or dead (parked). */
  outboxDeliveries: Counter<"subscriber" | "outcome">;
  /** Events this service received: applied, duplicate (applied before) or refused. */
  inboxEvents: Counter<"type" | "outcome">;
}

/** A registry per service instance with Node's default metrics and RPC counters. */
export function createMetrics(service: string): Metrics {
  const registry = new Registry();
  registry.setDefaultLabels({ service });
  // The event-loop lag monitor wakes the process at this interval even when idle; prom-client's
  // 10 ms default costs an idle service ~0.5% of a core here, 100 ms a tenth of that.
  collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 100 });
  return {
    registry,
    rpcHandled: new Counter({
      name: "rpc_server_handled_total",
      help: "RPCs completed, by method and Connect code",
      labelNames: ["method", "code"],
      registers: [registry],
    }),
    rpcDuration: new Histogram({
      name: "rpc_server_duration_seconds",
      help: "Time to handle an RPC",
      labelNames: ["method"],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
    outboxBatchEvents: new Histogram({
      name: "outbox_delivery_batch_events",
      help: "Events sent in one EventSink.Deliver call, by subscriber",
      labelNames: ["subscriber"],
      buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 500],
      registers: [registry],
    }),
    outboxDeliveries: new Counter({
      name: "outbox_deliveries_total",
      help: "Event deliveries by subscriber and outcome (accepted, retry, dead)",
      labelNames: ["subscriber", "outcome"],
      registers: [registry],
    }),
    inboxEvents: new Counter({
      name: "inbox_events_total",
      help: "Events received by type and outcome (applied, duplicate, refused)",
      labelNames: ["type", "outcome"],
      registers: [registry],
    }),
  };
}
