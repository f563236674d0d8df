// The reservation rules on their own, without a database: the all-or-none decision for an
// order's lines and the state machine of a reservation.
import { randomUUID } from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  decideReservation,
  decideSettlement,
  productIdsToLock,
  type ReservationStatus,
  type Settlement,
  type StockOnHand,
} from "../src/domain/reservation.js";

const mug: StockOnHand = { id: randomUUID(), sku: "MUG-BLUE", stockAvailable: 1 };
const tote: StockOnHand = { id: randomUUID(), sku: "TOTE-RED", stockAvailable: 10 };
const cap: StockOnHand = { id: randomUUID(), sku: "CAP-BLACK", stockAvailable: 0 };
const stock = [mug, tote, cap];
const byId = (a: { productId: string }, b: { productId: string }) =>
  a.productId < b.productId ? -1 : a.productId > b.productId ? 1 : 0;

describe("decideReservation", () => {
  it("reserves every line when each product has enough, one line per product in id order", () => {
    const decision = decideReservation(
      [
        { productId: tote.id, quantity: 4 },
        { productId: mug.id, quantity: 1 },
      ],
      stock,
    );
    expect(decision).toEqual({
      reserve: true,
      lines: [
        { productId: tote.id, quantity: 4 },
        { productId: mug.id, quantity: 1 },
      ].sort(byId),
    });
  });

  it("reserves exactly the units available", () => {
    expect(decideReservation([{ productId: tote.id, quantity: 10 }], stock)).toMatchObject({
      reserve: true,
    });
  });

  it("rejects the whole order when one line is short, naming the product and the numbers", () => {
    const decision = decideReservation(
      [
        { productId: tote.id, quantity: 2 },
        { productId: mug.id, quantity: 3 },
      ],
      stock,
    );
    expect(decision).toEqual({
      reserve: false,
      reason: "not enough stock for MUG-BLUE (wanted 3, 1 available)",
      productIds: [mug.id],
    });
  });

  it("adds up lines for the same product before checking", () => {
    const decision = decideReservation(
      [
        { productId: tote.id, quantity: 6 },
        { productId: tote.id.toUpperCase(), quantity: 5 },
      ],
      stock,
    );
    expect(decision).toEqual({
      reserve: false,
      reason: "not enough stock for TOTE-RED (wanted 11, 10 available)",
      productIds: [tote.id],
    });
    expect(
      decideReservation(
        [
          { productId: tote.id, quantity: 6 },
          { productId: tote.id.toUpperCase(), quantity: 4 },
        ],
        stock,
      ),
    ).toEqual({ reserve: true, lines: [{ productId: tote.id, quantity: 10 }] });
  });

  it("counts an unknown product, or an id that cannot be one, as not reservable", () => {
    const unknown = randomUUID();
    expect(decideReservation([{ productId: unknown, quantity: 1 }], stock)).toEqual({
      reserve: false,
      reason: `unknown product ${unknown}`,
      productIds: [unknown],
    });
    expect(decideReservation([{ productId: "MUG-BLUE", quantity: 1 }], stock)).toEqual({
      reserve: false,
      reason: "unknown product MUG-BLUE",
      productIds: ["MUG-BLUE"],
    });
  });

  it("names every product that fails, in the order's order", () => {
    const unknown = randomUUID();
    const decision = decideReservation(
      [
        { productId: cap.id, quantity: 1 },
        { productId: tote.id, quantity: 1 },
        { productId: unknown, quantity: 2 },
        { productId: mug.id, quantity: 2 },
      ],
      stock,
    );
    expect(decision).toEqual({
      reserve: false,
      reason: [
        "not enough stock for CAP-BLACK (wanted 1, 0 available)",
        `unknown product ${unknown}`,
        "not enough stock for MUG-BLUE (wanted 2, 1 available)",
      ].join("; "),
      productIds: [cap.id, unknown, mug.id],
    });
  });

  it.each([0, -2])("rejects a line with quantity %i", (quantity) => {
    expect(decideReservation([{ productId: tote.id, quantity }], stock)).toEqual({
      reserve: false,
      reason: `invalid quantity ${quantity} for product ${tote.id}`,
      productIds: [tote.id],
    });
  });

  it("rejects an order without lines", () => {
    expect(decideReservation([], stock)).toEqual({
      reserve: false,
      reason: "the order has no lines",
      productIds: [],
    });
  });
});

describe("productIdsToLock", () => {
  it("is the lower-case product ids, once each, sorted, without ids that cannot exist", () => {
    const ids = [randomUUID(), randomUUID(), randomUUID()];
    const locked = productIdsToLock([
      { productId: ids[2]!.toUpperCase(), quantity: 1 },
      { productId: ids[0]!, quantity: 1 },
      { productId: "not-a-uuid", quantity: 1 },
      { productId: ids[1]!, quantity: 1 },
      { productId: ids[2]!, quantity: 1 },
    ]);
    expect(locked).toEqual([...ids].sort());
  });
});

describe("decideSettlement", () => {
  const cases: [ReservationStatus | undefined, Settlement, string][] = [
    ["reserved", "commit", "committed"],
    ["committed", "commit", "ignored (info)"],
    ["released", "commit", "ignored (error)"],
    [undefined, "commit", "ignored (warn)"],
    ["reserved", "release", "released, stock returned"],
    ["released", "release", "ignored (info)"],
    ["committed", "release", "ignored (error)"],
    [undefined, "release", "ignored (info)"],
  ];
  it.each(cases)("%s + %s → %s", (current, settlement, expected) => {
    const decision = decideSettlement(current, settlement);
    const summary = decision.apply
      ? `${decision.to}${decision.returnStock ? ", stock returned" : ""}`
      : `ignored (${decision.level})`;
    expect(summary).toBe(expected);
  });

  it("says why a cancellation after the commit keeps the stock", () => {
    const decision = decideSettlement("committed", "release");
    expect(decision.apply).toBe(false);
    expect(!decision.apply && decision.note).toMatch(/refund and restock/);
  });
});
