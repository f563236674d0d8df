#!/usr/bin/env node
// What one EventSink.Deliver call and one event in it cost the consumer, measured on one
// service alone: PaymentRequested events sent to the payment service (which needs nothing
// else to accept them) as the order service's relay sends them, through order's outbound
// sidecar and payment's inbound one (payment accepts the event type only from its producer's
// mesh identity, order's), in batches of several sizes at the same number of calls a
// second, so that the CPU per call can be split into a part per call and a part per event.
// Usage (after npm run build):
//   node bench/deliver.js [--batches 1,12,48] [--calls 16] [--seconds 15] [--follow-ups]
// --follow-ups lets payment's relay send PaymentCaptured on to the order service as in the
// saga (the order service, knowing none of these orders, accepts and ignores them); without
// it payment publishes to nobody, and only the consumer's side is measured.
import { randomUUID } from "node:crypto";
import { parseArgs } from "node:util";
import { EventSinkService } from "@thinmesh/contracts/shop/events/v1/events_pb.js";
import { PaymentRequestedSchema } from "@thinmesh/contracts/shop/events/v1/saga_pb.js";
import { createPeerClient } from "@thinmesh/platform";
import { buildEventEnvelope } from "@thinmesh/platform/testing";
import {
  cpuSample,
  cpuSince,
  machine,
  noSubscriptionsFile,
  startBenchShop,
  switchesSample,
} from "./shop.js";

const { values } = parseArgs({
  options: {
    batches: { type: "string", default: "1,12,48" },
    calls: { type: "string", default: "16" },
    seconds: { type: "string", default: "15" },
    "follow-ups": { type: "boolean", default: false },
    help: { type: "boolean", short: "h", default: false },
  },
});
if (values.help) {
  console.log(`usage: node bench/deliver.js [--batches 1,12,48] [--calls 16] [--seconds 15] [--follow-ups]
(see bench/README.md)`);
  process.exit(0);
}
const batchSizes = values.batches.split(",").map(Number);
const callsPerSecond = Number(values.calls);
const seconds = Number(values.seconds);
const followUps = values["follow-ups"];
const positive = (value) => Number.isFinite(value) && value > 0;
if (!batchSizes.every((size) => Number.isInteger(size) && size > 0) || batchSizes.length === 0) {
  throw new Error(`--batches must list whole numbers above 0, like 1,12,48; got ${values.batches}`);
}
if (!positive(callsPerSecond)) throw new Error(`--calls must be above 0, got ${values.calls}`);
if (!positive(seconds)) throw new Error(`--seconds must be above 0, got ${values.seconds}`);

const bench = await startBenchShop("deliver", (dataDir) => ({
  payment: followUps ? {} : { EVENT_SUBSCRIPTIONS_FILE: noSubscriptionsFile(dataDir) },
}));
const { shop } = bench;

try {
  await shop.ready(90_000);
  // payment's VirtualService sends every call to v1, its first instance: the others (v2, at
  // weight 0) would only add their idling to payment's CPU.
  for (const idle of shop.processesOf("payment").slice(1)) await idle.stop();
  // As the order service's relay: its outbound sidecar, its identity.
  const payment = createPeerClient(EventSinkService, shop.peerUrl("order", "payment"));
  // A fresh order each time: every event is new work, a capture (under the simulator's limit).
  const batchOf = (size) =>
    Array.from({ length: size }, () => {
      const orderId = randomUUID();
      return buildEventEnvelope(
        PaymentRequestedSchema,
        {
          orderId,
          userId: randomUUID(),
          amount: { currencyCode: "EUR", amountMinor: 990n },
          paymentToken: "tok_test_visa",
        },
        { source: "order", subject: orderId },
      );
    });
  const deliver = async (size) => {
    const { results } = await payment.deliver({ events: batchOf(size) });
    const refused = results.find((r) => r.error);
    if (refused) throw new Error(`payment refused an event: ${refused.error.message}`);
  };

  // Warm: the JIT, the connection pools.
  for (const size of batchSizes) for (let i = 0; i < 20; i++) await deliver(size);

  const rows = [];
  for (const size of batchSizes) {
    const calls = Math.round(seconds * callsPerSecond);
    const cpuBefore = cpuSample(shop);
    const switchesBefore = switchesSample(shop);
    const started = performance.now();
    // Paced, one call at a time, as a relay lane at this rate sends them.
    for (let i = 0; i < calls; i++) {
      const wait = started + (i * 1000) / callsPerSecond - performance.now();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      await deliver(size);
    }
    // What the relay does after the last call (follow-ups) is part of it.
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const cpu = cpuSince(shop, cpuBefore);
    const switches = switchesSample(shop);
    rows.push({
      size,
      calls,
      paymentMsPerCall: cpu.payment / calls,
      postgresMsPerCall: cpu.rest / calls,
      paymentSwitchesPerCall: (switches.payment - switchesBefore.payment) / calls,
      postgresSwitchesPerCall: (switches.postgres - switchesBefore.postgres) / calls,
    });
  }

  console.log(
    `\n${callsPerSecond} Deliver calls/s to the payment service, ${seconds} s per batch size${followUps ? ", PaymentCaptured relayed on to order" : ", no follow-ups relayed"}; ${machine()}`,
  );
  console.log(
    "events per call   payment CPU per call / per event   Postgres per call   context switches per call (payment, Postgres)",
  );
  for (const r of rows) {
    console.log(
      `${String(r.size).padStart(15)}   ${r.paymentMsPerCall.toFixed(2).padStart(8)} ms / ${((r.paymentMsPerCall / r.size) * 1000).toFixed(0).padStart(5)} µs   ${r.postgresMsPerCall.toFixed(2).padStart(14)} ms   ${r.paymentSwitchesPerCall.toFixed(1)}, ${r.postgresSwitchesPerCall.toFixed(1)}`,
    );
  }
  // CPU per call = a + b × events, fitted by least squares over the batch sizes.
  if (rows.length >= 2) {
    const linearFit = (ys) => {
      const xs = rows.map((r) => r.size);
      const n = xs.length;
      const mx = xs.reduce((a, b) => a + b) / n;
      const my = ys.reduce((a, b) => a + b) / n;
      const slope =
        xs.reduce((s, x, i) => s + (x - mx) * (ys[i] - my), 0) /
        xs.reduce((s, x) => s + (x - mx) ** 2, 0);
      return { perCall: my - slope * mx, perEvent: slope };
    };
    const service = linearFit(rows.map((r) => r.paymentMsPerCall));
    const postgres = linearFit(rows.map((r) => r.postgresMsPerCall));
    console.log(
      `fitted: payment ${service.perCall.toFixed(2)} ms per call + ${(service.perEvent * 1000).toFixed(0)} µs per event; Postgres ${postgres.perCall.toFixed(2)} ms per call + ${(postgres.perEvent * 1000).toFixed(0)} µs per event`,
    );
  }
} finally {
  await bench.close();
}
