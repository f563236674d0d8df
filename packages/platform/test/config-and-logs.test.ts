import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import {
  baseConfigSchema,
  ConfigError,
  contextFromHeaders,
  createLogger,
  loadConfig,
  runWithContext,
  tokenConfigSchema,
} from "../src/index.js";

describe("configuration", () => {
  const schema = baseConfigSchema
    .extend(tokenConfigSchema.shape)
    .extend({ ADMIN_PASSWORD: z.string().min(12) });

  it("applies defaults and coerces numbers", () => {
    const config = loadConfig(schema, {
      AUTH_JWKS_URL: "http://auth/.well-known/jwks.json",
      ADMIN_PASSWORD: "long-enough-pw",
    });
    expect(config.PORT).toBe(8080);
    expect(config.AUTH_AUDIENCE).toBe("thinmesh");
    expect(
      loadConfig(schema, {
        PORT: "9090",
        AUTH_JWKS_URL: "http://a/j",
        ADMIN_PASSWORD: "long-enough-pw",
      }).PORT,
    ).toBe(9090);
  });

  it("names every bad or missing variable, and never prints secrets", () => {
    let error: unknown;
    try {
      loadConfig(schema, {
        PORT: "eighty",
        DATABASE_URL: "mysql://root:hunter2@db/shop",
        ADMIN_PASSWORD: "short",
      });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const message = (error as ConfigError).message;
    expect(message).toMatch(/PORT: .*got "eighty"/);
    expect(message).toMatch(/DATABASE_URL: must be a postgres/);
    expect(message).toMatch(/AUTH_JWKS_URL: .*it is not set/);
    expect(message).toMatch(/ADMIN_PASSWORD: /);
    expect(message).not.toContain("hunter2");
    expect(message).not.toContain("short");
  });
});

function capture() {
  const lines: Record<string, unknown>[] = [];
  const destination = new Writable({
    write(chunk, _encoding, done) {
      for (const line of chunk.toString().split("\n").filter(Boolean)) lines.push(JSON.parse(line));
      done();
    },
  });
  return {
    lines,
    logger: createLogger({ service: "svc", version: "v9", level: "info", destination }),
  };
}

describe("logs", () => {
  it("are JSON with service, version, request id and trace id on every line in a request", () => {
    const { lines, logger } = capture();
    const context = contextFromHeaders(
      new Headers({
        traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "x-request-id": "r-1",
      }),
    );
    runWithContext(context, () => {
      logger.info("first");
      logger.child({ component: "x" }).warn({ detail: 1 }, "second");
    });
    expect(lines).toHaveLength(2);
    for (const line of lines) {
      expect(line).toMatchObject({
        service: "svc",
        version: "v9",
        requestId: "r-1",
        traceId: "4bf92f3577b34da6a3ce929d0e0e4736",
      });
      expect(typeof line.time).toBe("string");
    }
    expect(lines[1]).toMatchObject({ level: "warn", component: "x" });
  });

  it("take the trace id from B3 headers when there is no traceparent", () => {
    const context = contextFromHeaders(new Headers({ "x-b3-traceid": "463ac35c9f6413ad" }));
    expect(context.traceId).toBe("0000000000000000463ac35c9f6413ad");
  });

  it("redact passwords, tokens, authorization headers and cookies", () => {
    const { lines, logger } = capture();
    logger.info({
      password: "p4ss",
      request: {
        password: "p4ss",
        refreshToken: "rt",
        headers: { authorization: "Bearer abc", cookie: "sid=1" },
      },
      accessToken: "at",
    });
    const text = JSON.stringify(lines[0]);
    for (const secret of ["p4ss", "Bearer abc", "sid=1", '"rt"', '"at"'])
      expect(text).not.toContain(secret);
    expect(text).toContain("[redacted]");
  });
});
