ALTER TABLE "payments" DROP CONSTRAINT "payments_status_known";--> statement-breakpoint
ALTER TABLE "payments" DROP CONSTRAINT "payments_outcome_explained";--> statement-breakpoint
ALTER TABLE "payments" ADD COLUMN "payment_token" text;--> statement-breakpoint
ALTER TABLE "payments" ADD COLUMN "charge_attempts" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "payments" ADD COLUMN "next_charge_at" timestamp with time zone DEFAULT now() NOT NULL;--> statement-breakpoint
ALTER TABLE "payments" ADD COLUMN "lease_until" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "payments" ADD COLUMN "traceparent" text DEFAULT '' NOT NULL;--> statement-breakpoint
ALTER TABLE "payments" ADD COLUMN "tracestate" text DEFAULT '' NOT NULL;--> statement-breakpoint
ALTER TABLE "payments" ADD COLUMN "last_error" text;--> statement-breakpoint
ALTER TABLE "payments" ADD COLUMN "settled_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "inbox" ADD COLUMN "outcome" text DEFAULT 'applied' NOT NULL;--> statement-breakpoint
ALTER TABLE "inbox" ADD COLUMN "refusal" text;--> statement-breakpoint
CREATE INDEX "payments_pending_due" ON "payments" USING btree ("next_charge_at") WHERE status = 'PENDING';--> statement-breakpoint
ALTER TABLE "payments" ADD CONSTRAINT "payments_status_known" CHECK ("payments"."status" in ('PENDING', 'CAPTURED', 'DECLINED'));--> statement-breakpoint
ALTER TABLE "payments" ADD CONSTRAINT "payments_outcome_explained" CHECK (("payments"."status" = 'PENDING' and "payments"."payment_token" is not null) or ("payments"."status" = 'CAPTURED' and "payments"."provider_reference" is not null) or ("payments"."status" = 'DECLINED' and "payments"."decline_reason" is not null));