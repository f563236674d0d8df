// What `npm start` prints: one readable line per record, with its cause.
import { describe, expect, it } from "vitest";
import { readable } from "../src/print.js";
import { type RawOutputRecord, rawOutput, summary } from "../src/supervisor.js";

describe("readable", () => {
  it("prints an error logged as a string, not undefined", () => {
    const line = JSON.stringify({
      level: "warn",
      time: "2026-12-03T08:00:01.000Z",
      service: "order",
      msg: "delivery failed; retrying",
      err: "connect ECONNREFUSED 127.0.0.1:9",
    });
    expect(readable(line)).toBe(
      "08:00:01 warn delivery failed; retrying: connect ECONNREFUSED 127.0.0.1:9",
    );
  });

  it("prints an error object's message and the record's other fields", () => {
    const line = JSON.stringify({
      level: "error",
      time: "2026-12-03T08:00:01.000Z",
      msg: "unexpected error in route",
      path: "/x",
      err: { type: "Error", message: "boom", stack: "Error: boom\n    at f (x.js:1:1)" },
    });
    expect(readable(line)).toBe('08:00:01 error unexpected error in route {"path":"/x"}: boom');
  });

  it("leaves a line that is not JSON as it is", () => {
    expect(readable("plain text")).toBe("plain text");
  });
});

describe("a workload's raw stderr", () => {
  const crash = [
    "file:///repo/services/catalog/dist/main.js:3",
    '    throw new Error("boom");',
    "          ^",
    "",
    "Error: boom",
    "    at file:///repo/services/catalog/dist/main.js:3:11",
    "    at ModuleJob.run (node:internal/modules/esm/module_job:271:25)",
    "",
    "Node.js v20.20.2",
  ];

  it("becomes one record whose message is the error's line, with every line kept", async () => {
    const records: RawOutputRecord[] = [];
    const output = rawOutput((record) => records.push(record));
    for (const line of crash) output.add(line);
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(records).toHaveLength(1);
    expect(records[0]!.msg).toBe("Error: boom");
    expect(records[0]!.stderr).toContain("at ModuleJob.run");
    expect(readable(JSON.stringify(records[0]))).toMatch(/ error Error: boom$/);
  });

  it("joins lines without a thrown error into one", () => {
    expect(summary(["payment: invalid configuration:", '  - X: bad (got "y")'])).toBe(
      'payment: invalid configuration: - X: bad (got "y")',
    );
  });
});
