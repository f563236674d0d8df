#!/usr/bin/env node
// What a request costs a bare Node.js HTTP server at different request rates: the CPU the
// server process spends per request, and the client's. Nothing of thinmesh runs; this shows
// the machine. Where an idle process is expensive to wake, a request costs many times more
// CPU at a low rate than at a high one, and so does every hop and round trip of the shop.
// Usage: node bench/wakeups.js [rates=20,100,500,2000] [seconds=5]
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import http from "node:http";
import { cpus } from "node:os";

const rates = (process.argv[2] ?? "20,100,500,2000").split(",").map(Number);
const seconds = Number(process.argv[3] ?? 5);

const serverCode = `
  const http = require("node:http");
  const server = http.createServer((req, res) => { req.resume(); req.on("end", () => res.end("ok")); });
  server.listen(0, "127.0.0.1", () => console.log(server.address().port));
`;
const server = spawn(process.execPath, ["-e", serverCode], {
  stdio: ["ignore", "pipe", "inherit"],
});
const port = await new Promise((resolve) =>
  server.stdout.once("data", (data) => resolve(Number(String(data)))),
);
const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
const call = () =>
  new Promise((resolve, reject) =>
    http
      .get({ host: "127.0.0.1", port, agent, path: "/" }, (res) => {
        res.resume();
        res.on("end", resolve);
      })
      .on("error", reject),
  );

// CPU time of a process in µs, from /proc (Linux; USER_HZ is 100).
const cpuOf = (pid) => {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10_000;
};

try {
  console.log(`node ${process.version}, ${cpus().length} cores`);
  console.log("requests/s   server CPU/request   client CPU/request");
  for (const rate of rates) {
    for (let i = 0; i < 200; i++) await call(); // warm up the JIT and the connections
    const total = Math.max(1, Math.round(rate * seconds));
    const serverBefore = cpuOf(server.pid);
    const clientBefore = process.cpuUsage();
    let answered = 0;
    await new Promise((resolve, reject) => {
      for (let i = 0; i < total; i++) {
        setTimeout(
          () =>
            call().then(() => {
              if (++answered === total) resolve();
            }, reject),
          (i * 1000) / rate,
        );
      }
    });
    const client = process.cpuUsage(clientBefore);
    const serverUs = (cpuOf(server.pid) - serverBefore) / total;
    const clientUs = (client.user + client.system) / total;
    console.log(
      `${String(rate).padStart(10)}   ${serverUs.toFixed(0).padStart(15)} µs   ${clientUs.toFixed(0).padStart(15)} µs`,
    );
  }
} finally {
  server.kill();
  agent.destroy();
}
