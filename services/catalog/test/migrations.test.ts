// The catalog's migrations: a database created before the saga (products only) gains the
// reservation, outbox and inbox tables when a newer catalog starts on it.
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openDatabase } from "@thinmesh/platform";
import { createTestDatabase } from "@thinmesh/platform/testing";
import { sql } from "drizzle-orm";
import { afterAll, describe, expect, it } from "vitest";
import { schema } from "../src/db/schema.js";
import { createProduct } from "../src/domain/products.js";
import { createProductStore, reservationTotals } from "../src/store.js";
import { migrationsFolder, newProduct } from "./support.js";

interface Journal {
  entries: { idx: number; when: number; tag: string }[];
}
const journal = (folder: string): Journal =>
  JSON.parse(readFileSync(join(folder, "meta/_journal.json"), "utf8"));

const scratch = mkdtempSync(join(tmpdir(), "catalog-migrations-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

describe("migrations", () => {
  it("keep a linear history: a migration older than the last applied one would be skipped", () => {
    const { entries } = journal(migrationsFolder);
    expect(entries.map((e) => e.idx)).toEqual(entries.map((_, i) => i));
    for (let i = 1; i < entries.length; i++) {
      expect(entries[i]!.when).toBeGreaterThan(entries[i - 1]!.when);
    }
  });

  it("bring a database from before the saga up to date, keeping its products", async () => {
    // The migrations folder as the first release shipped it.
    const before = join(scratch, "before-saga");
    cpSync(migrationsFolder, before, { recursive: true });
    const old = journal(before);
    writeFileSync(
      join(before, "meta/_journal.json"),
      JSON.stringify({ ...old, entries: old.entries.filter((e) => e.tag === "0000_products") }),
    );

    const testDatabase = await createTestDatabase("catalog_migrations");
    // PGlite keeps its files in a directory so that a second open sees the same database.
    const options = testDatabase.url
      ? { url: testDatabase.url }
      : { dataDir: join(scratch, "pglite") };
    try {
      const first = await openDatabase({ ...options, schema, migrationsFolder: before });
      await first.migrate();
      const product = await createProduct(
        createProductStore(first.db),
        newProduct({ initialStock: 4 }),
      );
      await first.close();

      const next = await openDatabase({ ...options, schema, migrationsFolder });
      try {
        await next.migrate();
        for (const table of ["reservations", "reservation_lines", "outbox_events", "inbox"]) {
          await next.db.execute(sql.raw(`select count(*) from ${table}`));
        }
        expect(await reservationTotals(next.db)).toEqual([
          { productId: product.id, sku: product.sku, stockAvailable: 4, reserved: 0, committed: 0 },
        ]);
      } finally {
        await next.close();
      }
    } finally {
      await testDatabase.drop();
    }
  });
});
