ALTER TABLE "inbox" ADD COLUMN "outcome" text DEFAULT 'applied' NOT NULL;--> statement-breakpoint
ALTER TABLE "inbox" ADD COLUMN "refusal" text;