import { and, desc, eq, sql } from "drizzle-orm";
import type { Hono } from "hono";
import { z } from "zod";
import type { AppDatabase } from "../database.js";
import { invalidArgument, permissionDenied } from "../errors.js";
import { requireToken, type TokenVerifier } from "../tokens.js";
import { outboxDeliveries, outboxEvents } from "./schema.js";

// biome-ignore lint/suspicious/noExplicitAny: works on any service's database
type AnyDatabase = AppDatabase<any>;

export interface DeadDelivery {
  eventId: string;
  type: string;
  subject: string;
  subscriber: string;
  attempts: number;
  lastError: string | null;
  createdAt: Date;
}

/** Events that ran out of attempts for a subscriber, newest first. */
export async function listDeadDeliveries(db: AnyDatabase, limit = 100): Promise<DeadDelivery[]> {
  return db
    .select({
      eventId: outboxDeliveries.eventId,
      type: outboxEvents.type,
      subject: outboxEvents.subject,
      subscriber: outboxDeliveries.subscriber,
      attempts: outboxDeliveries.attempts,
      lastError: outboxDeliveries.lastError,
      createdAt: outboxEvents.createdAt,
    })
    .from(outboxDeliveries)
    .innerJoin(outboxEvents, eq(outboxEvents.id, outboxDeliveries.eventId))
    .where(eq(outboxDeliveries.status, "dead"))
    .orderBy(desc(outboxEvents.createdAt))
    .limit(limit);
}

/** Puts dead deliveries back in line (all, or one event's, or one subscriber's). */
export async function redriveDeadDeliveries(
  db: AnyDatabase,
  filter: { eventId?: string | undefined; subscriber?: string | undefined } = {},
): Promise<number> {
  const redriven = await db
    .update(outboxDeliveries)
    .set({ status: "pending", attempts: 0, nextAttemptAt: sql`now()`, leaseUntil: null })
    .where(
      and(
        eq(outboxDeliveries.status, "dead"),
        filter.eventId ? eq(outboxDeliveries.eventId, filter.eventId) : undefined,
        filter.subscriber ? eq(outboxDeliveries.subscriber, filter.subscriber) : undefined,
      ),
    )
    .returning({ eventId: outboxDeliveries.eventId });
  return redriven.length;
}

const redriveRequest = z.strictObject({
  eventId: z.uuid().optional(),
  subscriber: z
    .string()
    .regex(/^[a-z][a-z0-9-]*$/)
    .optional(),
});

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw invalidArgument(
      'the redrive request body must be JSON, for example {"subscriber":"catalog"}',
    );
  }
}

/**
 * Operator routes, admin token required: GET /admin/outbox/dead lists parked events,
 * POST /admin/outbox/redrive {eventId?, subscriber?} puts them back in line.
 */
export function deadLetterRoutes(
  app: Hono,
  db: AnyDatabase,
  verifier: TokenVerifier,
  wake: () => void,
) {
  const admin = requireToken(verifier);
  app.use("/admin/outbox/*", admin, async (c, next) => {
    if (!c.get("caller").roles.includes("admin"))
      throw permissionDenied('the outbox routes require the "admin" role');
    await next();
  });
  app.get("/admin/outbox/dead", async (c) => c.json({ dead: await listDeadDeliveries(db) }));
  app.post("/admin/outbox/redrive", async (c) => {
    const text = await c.req.text();
    const parsed = redriveRequest.safeParse(text ? safeJson(text) : {});
    if (!parsed.success) {
      const problems = parsed.error.issues.map(
        (i) => `${i.path.join(".") || "body"}: ${i.message}`,
      );
      throw invalidArgument(`invalid redrive request: ${problems.join("; ")}`);
    }
    const redriven = await redriveDeadDeliveries(db, parsed.data);
    wake();
    return c.json({ redriven });
  });
}
