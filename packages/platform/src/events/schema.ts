import { sql } from "drizzle-orm";
import {
  customType,
  index,
  integer,
  pgTable,
  primaryKey,
  text,
  timestamp,
  uuid,
} from "drizzle-orm/pg-core";

const bytea = customType<{ data: Uint8Array; driverData: Uint8Array }>({
  dataType: () => "bytea",
});
const timestamptz = (name: string) => timestamp(name, { withTimezone: true, mode: "date" });

/**
 * Events a service has committed, each in the same transaction as the change it announces.
 * The envelope is the binary shop.events.v1.Event, ready to deliver.
 */
export const outboxEvents = pgTable("outbox_events", {
  id: uuid("id").primaryKey(),
  type: text("type").notNull(),
  subject: text("subject").notNull(),
  envelope: bytea("envelope").notNull(),
  createdAt: timestamptz("created_at").notNull().defaultNow(),
});

/**
 * Delivery state per event and subscriber, so one slow or absent consumer never holds up
 * the others. "dead" rows wait for an operator to re-drive them.
 */
export const outboxDeliveries = pgTable(
  "outbox_deliveries",
  {
    eventId: uuid("event_id")
      .notNull()
      .references(() => outboxEvents.id, { onDelete: "cascade" }),
    subscriber: text("subscriber").notNull(),
    status: text("status", { enum: ["pending", "delivered", "dead"] })
      .notNull()
      .default("pending"),
    attempts: integer("attempts").notNull().default(0),
    nextAttemptAt: timestamptz("next_attempt_at").notNull().defaultNow(),
    /** A relay that claimed the row owns it until then; after that another may take it. */
    leaseUntil: timestamptz("lease_until"),
    lastError: text("last_error"),
    deliveredAt: timestamptz("delivered_at"),
    createdAt: timestamptz("created_at").notNull().defaultNow(),
  },
  (t) => [
    primaryKey({ columns: [t.eventId, t.subscriber] }),
    index("outbox_deliveries_due").on(t.nextAttemptAt).where(sql`status = 'pending'`),
  ],
);

/**
 * Events this service has handled; recorded in the same transaction as their effect. A
 * refused event (it contradicted the service's state) is recorded too, with why, and had no
 * effect: its redelivery is a duplicate like any other.
 */
export const inbox = pgTable("inbox", {
  eventId: uuid("event_id").primaryKey(),
  type: text("type").notNull(),
  source: text("source").notNull(),
  outcome: text("outcome", { enum: ["applied", "refused"] })
    .notNull()
    .default("applied"),
  refusal: text("refusal"),
  handledAt: timestamptz("handled_at").notNull().defaultNow(),
});

export const eventTables = { outboxEvents, outboxDeliveries, inbox };
