// The embedded databases of a first start: one initdb for a template, a copy per workload.
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openDatabase } from "@thinmesh/platform";
import { sql } from "drizzle-orm";
import { afterAll, describe, expect, it } from "vitest";
import { prepareEmbeddedDatabases } from "../../mesh/local/src/embedded.js";

const root = mkdtempSync(join(tmpdir(), "thinmesh-embedded-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const fixtureMigrations = join(
  import.meta.dirname,
  "../../packages/platform/test/fixtures/migrations",
);

describe("prepareEmbeddedDatabases", () => {
  it("creates one template and copies it for each workload without a data directory", async () => {
    // An existing database is left as it is.
    mkdirSync(join(root, "kept"));
    writeFileSync(join(root, "kept", "PG_VERSION"), "17\n");
    const progress: string[] = [];
    const created = await prepareEmbeddedDatabases(root, ["one", "two", "kept"], (m) =>
      progress.push(m),
    );
    expect(created).toEqual(["one", "two"]);
    expect(progress).toHaveLength(1);
    for (const name of ["one", "two", ".template"]) {
      expect(existsSync(join(root, name, "PG_VERSION")), name).toBe(true);
    }
    expect(readFileSync(join(root, "kept", "PG_VERSION"), "utf8")).toBe("17\n");
    // Nothing half-made is left next to them.
    expect(readdirSync(root).sort()).toEqual([".template", "kept", "one", "two"]);

    // A second start finds everything in place: no initdb, no copy.
    expect(
      await prepareEmbeddedDatabases(root, ["one", "two", "kept"], (m) => progress.push(m)),
    ).toEqual([]);
    expect(progress).toHaveLength(1);
  }, 180_000);

  it("gives a copy that opens as a database with the embedded memory settings", async () => {
    const database = await openDatabase({
      dataDir: join(root, "one"),
      schema: {},
      migrationsFolder: fixtureMigrations,
    });
    try {
      const result = (await database.db.execute(sql`show shared_buffers`)) as unknown as {
        rows: { shared_buffers: string }[];
      };
      expect(result.rows[0]?.shared_buffers).toBe("16MB");
      await database.db.execute(sql`create table t (id int)`);
    } finally {
      await database.close();
    }
  }, 120_000);
});
