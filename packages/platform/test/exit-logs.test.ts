// The last log lines of a process survive its exit: after SIGTERM (drain, then exit) and after
// an uncaught exception, stdout holds the lines that say what happened.
import { type ChildProcess, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { create } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { MoneySchema } from "@thinmesh/contracts/shop/common/v1/money_pb.js";
import {
  DeliverRequestSchema,
  EventSinkService,
} from "@thinmesh/contracts/shop/events/v1/events_pb.js";
import { afterAll, describe, expect, it } from "vitest";
import { buildEventEnvelope, createTestDatabase, type TestDatabase } from "../src/testing/index.js";

const main = fileURLToPath(new URL("./fixtures/sink-main.ts", import.meta.url));
const databases: TestDatabase[] = [];
const children: ChildProcess[] = [];
afterAll(async () => {
  for (const child of children) if (child.exitCode === null) child.kill("SIGKILL");
  for (const database of databases) await database.drop();
});

interface Started {
  child: ChildProcess;
  url: string;
  lines: () => { msg?: string; level?: string }[];
  exited: Promise<number | null>;
}

/** Starts the sink fixture as a child process and waits for its "ready" line. */
async function startChild(extraEnv: Record<string, string> = {}): Promise<Started> {
  const database = await createTestDatabase("platform_exit_logs");
  databases.push(database);
  const child = spawn(process.execPath, ["--import", "tsx", "--conditions=thinmesh-source", main], {
    env: {
      ...process.env,
      PORT: "0",
      HOST: "127.0.0.1",
      LOG_LEVEL: "info",
      SHUTDOWN_GRACE_MS: "5000",
      ...(database.url ? { DATABASE_URL: database.url } : {}),
      ...extraEnv,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.push(child);
  let stdout = "";
  child.stdout!.on("data", (chunk) => {
    stdout += chunk;
  });
  child.stderr!.resume();
  const exited = new Promise<number | null>((resolve) =>
    child.once("exit", (code) => resolve(code)),
  );
  const lines = () =>
    stdout
      .split("\n")
      .filter((line) => line.startsWith("{"))
      .map((line) => JSON.parse(line) as { msg?: string; level?: string; url?: string });
  const deadline = Date.now() + 60_000;
  for (;;) {
    const ready = lines().find((line) => line.msg === "ready") as { url?: string } | undefined;
    if (ready?.url) return { child, url: ready.url, lines, exited };
    if (child.exitCode !== null || Date.now() > deadline) {
      throw new Error(`the fixture did not get ready:\n${stdout}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

const slowEvent = () =>
  create(DeliverRequestSchema, {
    events: [
      buildEventEnvelope(
        MoneySchema,
        { currencyCode: "EUR", amountMinor: 1n },
        { source: "test", type: "test.slow" },
      ),
    ],
  });

describe("log lines at exit", () => {
  it("SIGTERM with a request in flight: it is answered, and 'stopped' is on stdout", async () => {
    const { child, url, lines, exited } = await startChild();
    const client = createClient(
      EventSinkService,
      createConnectTransport({ baseUrl: url, httpVersion: "1.1" }),
    );
    const inFlight = client.deliver(slowEvent());
    await new Promise((resolve) => setTimeout(resolve, 100));
    child.kill("SIGTERM");
    await expect(inFlight).resolves.toBeDefined();
    expect(await exited).toBe(0);
    const messages = lines().map((line) => line.msg);
    expect(messages).toContain("signal received");
    expect(messages).toContain("shutting down: draining requests");
    expect(messages.at(-1)).toBe("stopped");
  }, 90_000);

  it("an uncaught exception: the fatal line is on stdout and the exit code is 1", async () => {
    const { child, lines, exited } = await startChild();
    child.kill("SIGUSR2");
    expect(await exited).toBe(1);
    const fatal = lines().find((line) => line.level === "fatal") as
      | { msg?: string; err?: { message?: string } }
      | undefined;
    expect(fatal?.msg).toBe("uncaught exception; exiting");
    expect(fatal?.err?.message).toBe("a bug nobody caught");
    expect(lines().at(-1)?.msg).toBe("uncaught exception; exiting");
    expect(lines().map((line) => line.msg)).toContain("ready");
  }, 90_000);
});
