CREATE TABLE "products" (
	"id" uuid PRIMARY KEY NOT NULL,
	"sku" text COLLATE "C" NOT NULL,
	"name" text NOT NULL,
	"description" text NOT NULL,
	"price_minor" bigint NOT NULL,
	"currency" char(3) NOT NULL,
	"stock_available" integer NOT NULL,
	"initial_stock" integer NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "products_sku_unique" UNIQUE("sku"),
	CONSTRAINT "products_price_positive" CHECK ("products"."price_minor" > 0),
	CONSTRAINT "products_currency_iso" CHECK ("products"."currency" ~ '^[A-Z]{3}$'),
	CONSTRAINT "products_stock_available_not_negative" CHECK ("products"."stock_available" >= 0),
	CONSTRAINT "products_initial_stock_not_negative" CHECK ("products"."initial_stock" >= 0)
);
