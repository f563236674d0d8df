// Secrets never reach a log line: query-string tokens, database errors' parameters, and the
// known secret fields anywhere in a logged object.
import { Writable } from "node:stream";
import { sql } from "drizzle-orm";
import { afterAll, describe, expect, it } from "vitest";
import { createLogger, openDatabase, redactQuery } from "../src/index.js";
import { createTestDatabase } from "../src/testing/index.js";
import { deliveries } from "./fixtures/schema.js";

function capturedLogger() {
  const lines: string[] = [];
  const destination = new Writable({
    write(chunk, _encoding, done) {
      lines.push(String(chunk));
      done();
    },
  });
  const logger = createLogger({ service: "test", version: "v1", level: "info", destination });
  return { logger, text: () => lines.join("") };
}

const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

describe("redactQuery", () => {
  it("redacts the values of secret-looking query parameters and keeps their names", () => {
    expect(
      redactQuery("/x?access_token=eyJhbGciOi.abc&page=2&token=t0k&API_KEY=k&code=c&q=shoes"),
    ).toBe(
      "/x?access_token=[redacted]&page=2&token=[redacted]&API_KEY=[redacted]&code=[redacted]&q=shoes",
    );
    expect(redactQuery("/x?client%5Fsecret=s3cr3t&password=hunter2")).toBe(
      "/x?client%5Fsecret=[redacted]&password=[redacted]",
    );
    expect(redactQuery("/shop.auth.v1.AuthService/Login")).toBe("/shop.auth.v1.AuthService/Login");
  });
});

describe("the logger", () => {
  it("redacts secret fields at any of the first three levels", () => {
    const { logger, text } = capturedLogger();
    logger.info({
      paymentToken: "tok_visible_1",
      request: { payment_token: "tok_visible_2", headers: { authorization: "Bearer abc.def" } },
      body: { tokens: { refreshToken: "rt_visible", accessToken: "at_visible" } },
      password: "hunter2",
    });
    for (const secret of ["tok_visible", "abc.def", "rt_visible", "at_visible", "hunter2"]) {
      expect(text()).not.toContain(secret);
    }
    expect(text()).toContain("[redacted]");
  });

  it("logs a failed query without its parameters", async () => {
    const testDb = await createTestDatabase("platform_log_secrets");
    cleanups.push(testDb.drop);
    const database = await openDatabase({
      url: testDb.url,
      schema: { deliveries },
      migrationsFolder: new URL("./fixtures/migrations", import.meta.url).pathname,
    });
    cleanups.push(database.close);
    await database.migrate();
    const error = await database.db.execute(sql`select ${"tok_secret_payment_4242"}::int`).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(String((error as Error).message)).toContain("tok_secret_payment_4242"); // drizzle's
    const { logger, text } = capturedLogger();
    logger.error({ err: error }, "query failed");
    expect(text()).toContain("query failed");
    expect(text()).toContain("select $1::int");
    expect(text()).not.toContain("tok_secret_payment_4242");
  });
});
