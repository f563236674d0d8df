#!/usr/bin/env node
// What the sidecars cost the saga, measured in one run: the same build started twice on the
// real Postgres (each shop on databases of its own, dropped at the end), once through its
// sidecars as `npm start` runs it and once with `bypassSidecars` (the apps call each other
// directly, the ingress forwards in plaintext), both up at once, driven in turn by the same
// load generator so that the machine's drift hits both alike. Usage (after npm run build):
//   node bench/sidecars.js [--seconds 30] [--rounds 2] [--slices 3] [--concurrency 32]
//                          [--rate 50] [--warm-up 5]
// Each round runs on both shops a closed loop of --concurrency customers (confirmed orders/s
// at saturation), then an open loop at --rate orders/s (PlaceOrder p50 and p99): --seconds per
// shop and loop, in --slices slices during which the shops take turns (sidecars first in odd
// rounds, bypassed first in even ones), pooled. Prints each round and all rounds together, the
// ratios sidecars / bypassed, checks them against the issue's targets (throughput ≥ 0.6×,
// PlaceOrder p50 ≤ 1.5×), the CPU per order by process on each shop and where the difference
// goes, then the saga's invariants on both shops.
import { loadavg } from "node:os";
import { parseArgs } from "node:util";
import { checkInvariants, snapshotStock } from "../mesh/local/dist/invariants.js";
import { startLoad } from "./load.js";
import {
  byProcess,
  percentile,
  prepareCustomers,
  rateName,
  runPhase,
  startSagaShop,
} from "./saga.js";
import { machine, pidsOf } from "./shop.js";

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "30" },
    rounds: { type: "string", default: "2" },
    concurrency: { type: "string", default: "32" },
    rate: { type: "string", default: "50" },
    slices: { type: "string", default: "3" },
    "warm-up": { type: "string", default: "5" },
    help: { type: "boolean", short: "h", default: false },
  },
});
if (values.help) {
  console.log(`usage: node bench/sidecars.js [--seconds 30] [--rounds 2] [--slices 3] [--concurrency 32]
                           [--rate 50] [--warm-up 5]
(see bench/README.md)`);
  process.exit(0);
}
const seconds = Number(values.seconds);
const rounds = Number(values.rounds);
const concurrency = Number(values.concurrency);
const rate = Number(values.rate);
const warmUp = Number(values["warm-up"]);
const sliceCount = Number(values.slices);
const invalid = [
  !(seconds > 0) && `--seconds must be above 0, got ${values.seconds}`,
  !(Number.isInteger(rounds) && rounds > 0) &&
    `--rounds must be a whole number above 0, got ${values.rounds}`,
  !(Number.isInteger(concurrency) && concurrency > 0) &&
    `--concurrency must be a whole number above 0, got ${values.concurrency}`,
  !(rate > 0) && `--rate must be above 0 (the open loop's orders/s), got ${values.rate}`,
  !(Number.isInteger(sliceCount) && sliceCount > 0) &&
    `--slices must be a whole number above 0, got ${values.slices}`,
  !(warmUp >= 0) && `--warm-up must be 0 or more, got ${values["warm-up"]}`,
].filter(Boolean);
if (invalid.length > 0) throw new Error(invalid.join("; "));
/** The issue's targets: sidecars / bypassed. */
const targets = { throughput: 0.6, placeP50: 1.5 };

const shops = [];
const load = startLoad();
try {
  for (const [name, bypassSidecars] of [
    ["sidecars", false],
    ["bypassed", true],
  ]) {
    const bench = await startSagaShop(name, { bypassSidecars });
    shops.push({ name, bench });
  }
  for (const shop of shops) {
    shop.customers = await prepareCustomers(shop.bench.shop, concurrency);
    shop.stockBefore = await snapshotStock(shop.bench.databaseUrls);
  }
  /** One phase on one shop; the other shop's processes idle meanwhile, counted apart. */
  const phase = (shop, label, phaseRate, phaseSeconds) => {
    const other = shops.find((s) => s !== shop);
    return runPhase(
      {
        bench: shop.bench,
        load,
        customers: shop.customers,
        concurrency,
        others: { "other shop": pidsOf(other.bench.shop) },
      },
      { label, base: shop.bench.shop.ingressUrl, rate: phaseRate, seconds: phaseSeconds },
    );
  };
  // Unreported: the first seconds run cold (JIT, connection pools, sessions).
  if (warmUp > 0) {
    for (const shop of shops) {
      await phase(shop, "warm-up", rate, warmUp);
      await phase(shop, "warm-up", 0, warmUp);
    }
  }

  const kinds = [
    { key: "closed", rate: 0 },
    { key: "open", rate },
  ];
  const slices = []; // { round, shop, kind, r }: one per slice
  const loads = [];
  for (let round = 1; round <= rounds; round++) {
    // Sidecars first in odd rounds, bypassed first in even ones; within a round the shops
    // take turns slice by slice, so that a burst of the neighbours' load falls on both.
    const order = round % 2 === 1 ? shops : [...shops].reverse();
    for (const kind of kinds) {
      for (let slice = 0; slice < sliceCount; slice++) {
        for (const shop of order) {
          const label = `${shop.name}, ${rateName(kind.rate)}`;
          const r = await phase(shop, label, kind.rate, seconds / sliceCount);
          slices.push({ round, shop: shop.name, kind: kind.key, r });
          loads.push(loadAverage());
          console.error(
            `round ${round}, slice ${slice + 1}: ${label}: ${r.confirmedPerSecond.toFixed(0)} confirmed/s, PlaceOrder p50 ${r.placeP50.toFixed(1)} ms, p99 ${r.placeP99.toFixed(1)} ms; rest of the machine ${r.coresPlacing.rest.toFixed(2)} cores; load average ${loads.at(-1)}`,
          );
        }
      }
    }
  }

  /** The slices of one shop and kind (of one round, or of all) as one phase. */
  const pooled = (shop, kind, round) =>
    pool(
      slices
        .filter(
          (x) => x.shop === shop && x.kind === kind && (round === undefined || x.round === round),
        )
        .map((x) => x.r),
    );
  const roundList = Array.from({ length: rounds }, (_, i) => i + 1);
  const ratio = (pick, kind) => (round) =>
    pick(pooled("sidecars", kind, round)) / pick(pooled("bypassed", kind, round));
  const throughput = ratio((r) => r.confirmedPerSecond, "closed");
  const closedP50 = ratio((r) => r.placeP50, "closed");
  const openP50 = ratio((r) => r.placeP50, "open");
  const openP99 = ratio((r) => r.placeP99, "open");

  console.log(
    `\nthrough the sidecars vs bypassed, same build; ${rounds} round(s), each ${seconds} s per shop and loop in ${sliceCount} alternating slices: a closed loop of ${concurrency} customers, then ${rateName(rate)} offered (at most ${concurrency} in flight); ${machine()}; load average ${loads[0]} … ${loads.at(-1)} (max ${Math.max(...loads.map(Number)).toFixed(2)})`,
  );
  console.log(
    "round  phase                    placed  failed  confirmed/s  PlaceOrder p50/p99     to CONFIRMED p50/p99   rest of the machine",
  );
  for (const round of [...roundList, undefined]) {
    for (const kind of kinds) {
      for (const shop of shops) {
        const r = pooled(shop.name, kind.key, round);
        console.log(
          `${String(round ?? "all").padStart(5)}  ${`${shop.name}, ${rateName(kind.rate)}`.padEnd(22)} ${String(r.placed).padStart(7)} ${String(r.failures).padStart(7)} ${r.confirmedPerSecond.toFixed(0).padStart(12)}  ${r.placeP50.toFixed(1).padStart(7)} / ${r.placeP99.toFixed(1).padStart(6)} ms  ${r.confirmP50.toFixed(0).padStart(8)} / ${r.confirmP99.toFixed(0).padEnd(6)} ms  ${r.coresPlacing.rest.toFixed(2)} cores`,
        );
      }
    }
  }
  const times = (value) => `×${value.toFixed(2)}`;
  console.log("\nsidecars / bypassed, per round and over all rounds:");
  for (const [label, of] of [
    ["confirmed/s, closed loop", throughput],
    ["PlaceOrder p50, closed loop", closedP50],
    [`PlaceOrder p50 at ${rateName(rate)}`, openP50],
    [`PlaceOrder p99 at ${rateName(rate)}`, openP99],
  ]) {
    console.log(
      `${label.padEnd(28)} ${roundList.map((round) => times(of(round))).join("  ")}   all: ${times(of())}`,
    );
  }
  const verdict = (holds) => (holds ? "✓" : "✗");
  console.log(
    `targets: confirmed/s through the sidecars ≥ ${targets.throughput}× bypassed: ${times(throughput())} ${verdict(throughput() >= targets.throughput)}; PlaceOrder p50 at ${rateName(rate)} ≤ ${targets.placeP50}× bypassed: ${times(openP50())} ${verdict(openP50() <= targets.placeP50)}`,
  );

  // Where the difference goes: CPU per confirmed order by process, over all rounds.
  for (const kind of kinds) {
    console.log(
      `\nCPU ms per confirmed order, ${rateName(kind.rate)} (placing until settled; all rounds):`,
    );
    const [withSidecars, bypassed] = shops.map((shop) => pooled(shop.name, kind.key));
    console.log(`${"sidecars".padEnd(22)} ${byProcess(withSidecars.cpuPerOrder)}`);
    console.log(`${"bypassed".padEnd(22)} ${byProcess(bypassed.cpuPerOrder)}`);
    const difference = Object.fromEntries(
      Object.keys(withSidecars.cpuPerOrder).map((name) => [
        name,
        withSidecars.cpuPerOrder[name] - bypassed.cpuPerOrder[name],
      ]),
    );
    console.log(`${"sidecars − bypassed".padEnd(22)} ${byProcess(difference)}`);
    console.log(`context switches per order, ${rateName(kind.rate)}:`);
    console.log(`${"sidecars".padEnd(22)} ${byProcess(withSidecars.switchesPerOrder)}`);
    console.log(`${"bypassed".padEnd(22)} ${byProcess(bypassed.switchesPerOrder)}`);
    console.log(`cores kept busy while placing, ${rateName(kind.rate)} (1 = one core):`);
    console.log(`${"sidecars".padEnd(22)} ${byProcess(withSidecars.coresPlacing, 2)}`);
    console.log(`${"bypassed".padEnd(22)} ${byProcess(bypassed.coresPlacing, 2)}`);
  }

  let violations = 0;
  for (const shop of shops) {
    const report = await checkInvariants(shop.bench.databaseUrls, shop.stockBefore);
    violations += report.violations.length;
    console.log(
      `${shop.name}: orders ${report.orders.total}: ${report.orders.confirmed} confirmed, ${report.orders.cancelled} cancelled; invariants: ${report.violations.length ? report.violations.join("; ") : "all hold (none lost or stuck)"}`,
    );
  }
  process.exitCode = violations ? 1 : 0;
} finally {
  await load.close();
  for (const shop of shops) await shop.bench.close();
}

/**
 * Phases (runPhase's results) as one: the latencies pooled, orders per second over their
 * time together, CPU and context switches per order and cores weighted by what each phase
 * contributed.
 */
function pool(phases) {
  const sum = (pick) => phases.reduce((total, r) => total + pick(r), 0);
  const latencies = phases.flatMap((r) => r.latencies).sort((a, b) => a - b);
  const done = sum((r) => r.done);
  const placingSeconds = sum((r) => r.placingSeconds);
  const weighted = (field, weight, total) =>
    Object.fromEntries(
      Object.keys(phases[0][field]).map((name) => [
        name,
        sum((r) => (r[field][name] ?? 0) * weight(r)) / Math.max(Number.MIN_VALUE, total),
      ]),
    );
  // Time to CONFIRMED: each phase's percentiles only; their mean, weighted by orders.
  const confirmMean = (field) => sum((r) => (r[field] ?? 0) * r.done) / Math.max(1, done);
  return {
    placed: latencies.length,
    failures: sum((r) => r.failures),
    confirmedPerSecond: done / sum((r) => r.doneSeconds),
    placeP50: percentile(latencies, 50),
    placeP99: percentile(latencies, 99),
    confirmP50: confirmMean("confirmP50"),
    confirmP99: confirmMean("confirmP99"),
    cpuPerOrder: weighted("cpuPerOrder", (r) => r.done, done),
    switchesPerOrder: weighted("switchesPerOrder", (r) => r.done, done),
    coresPlacing: weighted("coresPlacing", (r) => r.placingSeconds, placingSeconds),
  };
}

/** The 1-minute load average now (the machine is shared: it says how busy it was). */
function loadAverage() {
  return loadavg()[0].toFixed(2);
}
