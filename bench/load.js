// The benchmarks' customers: a child process that places orders, so that the benchmark's own
// process hosts only what mesh/local's main process hosts under `npm start` (the ingress and
// the sidecars, one thread for all of them) and the CPU of each side is counted apart.
// startLoad() forks it; each place() runs one phase in it and returns the latencies.
import { fork } from "node:child_process";
import { randomUUID } from "node:crypto";
import { rpc } from "./http.js";

/** The load generator's process: `pid`, `place(job)` for one phase, `close()`. */
export function startLoad() {
  const child = fork(import.meta.filename, ["--child"], { stdio: "inherit" });
  const waiting = [];
  child.on("message", (result) => waiting.shift()?.resolve(result));
  child.on("exit", (code) => {
    for (const w of waiting.splice(0)) w.reject(new Error(`the load generator exited (${code})`));
  });
  return {
    pid: child.pid,
    /**
     * Places orders at base (an ingress URL, or an order app's address) for `seconds`, or
     * exactly `orders` of them: at `rate` orders/s (an open loop) or, with rate 0, by
     * `concurrency` customers each placing the next when the last is answered. Resolves to
     * { latencies (ms, unsorted), failures, errors (the first few), placingSeconds }.
     */
    place: (job) =>
      new Promise((resolve, reject) => {
        waiting.push({ resolve, reject });
        child.send(job);
      }),
    close: () =>
      new Promise((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once("exit", () => resolve());
        child.disconnect();
      }),
  };
}

/** One phase of placing, in the child. */
async function place({ base, rate, seconds, orders, concurrency, products, users }) {
  const latencies = [];
  const errors = [];
  let failures = 0;
  const fail = (error) => {
    failures++;
    if (errors.length < 5) errors.push(error.message);
  };
  const placeOrder = (worker, n) =>
    rpc(
      base,
      "shop.order.v1.OrderService/PlaceOrder",
      {
        idempotencyKey: randomUUID(),
        items: [{ productId: products[(worker + n) % products.length], quantity: 1 }],
        paymentToken: "tok_test_visa",
      },
      users[worker % users.length],
    );
  const started = performance.now();
  const deadline = started + seconds * 1000;
  if (rate > 0) {
    // Open loop: order i is due at started + i / rate; a free slot takes the oldest due one.
    // Latency counts from when an order was due, so waiting for a free slot is not hidden.
    const total = orders ?? Math.floor(seconds * rate);
    let next = 0;
    let inFlight = 0;
    // One timer at a time: a timer per completed order would pile up and the load generator
    // would burn the cores it shares with the shop.
    let timer;
    await new Promise((resolve) => {
      const pump = () => {
        const now = performance.now();
        while (next < total && inFlight < concurrency && started + (next * 1000) / rate <= now) {
          const n = next++;
          const due = started + (n * 1000) / rate;
          inFlight++;
          placeOrder(n, n)
            .then(() => latencies.push(performance.now() - due), fail)
            .finally(() => {
              inFlight--;
              if (next >= total && inFlight === 0) resolve();
              else pump();
            });
        }
        if (timer === undefined && next < total && inFlight < concurrency) {
          const wait = Math.max(0, started + (next * 1000) / rate - performance.now());
          timer = setTimeout(() => {
            timer = undefined;
            pump();
          }, wait);
        }
      };
      pump();
    });
  } else {
    let placing = 0;
    const more = () => (orders === undefined ? performance.now() < deadline : placing < orders);
    await Promise.all(
      Array.from({ length: concurrency }, async (_, worker) => {
        for (let n = 0; more(); n++) {
          placing++;
          const t0 = performance.now();
          await placeOrder(worker, n).then(() => latencies.push(performance.now() - t0), fail);
        }
      }),
    );
  }
  return { latencies, failures, errors, placingSeconds: (performance.now() - started) / 1000 };
}

if (process.argv[2] === "--child" && process.send) {
  process.on("message", async (job) => process.send(await place(job)));
  // The parent went away (or closed the channel): nothing more to place.
  process.on("disconnect", () => process.exit(0));
}
