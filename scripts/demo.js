#!/usr/bin/env node
// `npm run demo`: a walkthrough against a running shop (`npm start` in another terminal).
// Everything goes through the ingress as Connect JSON — the same calls curl would make.
// THINMESH_URL overrides the ingress (default http://127.0.0.1:8080). Started before the shop
// is up, it waits for it, up to THINMESH_DEMO_WAIT_S seconds (default 120).
import { randomUUID } from "node:crypto";

const ingress = process.env.THINMESH_URL ?? "http://127.0.0.1:8080";
const waitSeconds = Number(process.env.THINMESH_DEMO_WAIT_S ?? 120);
const bold = (text) => (process.stdout.isTTY ? `\x1b[1m${text}\x1b[0m` : text);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** An expected way for the demo to end early: printed as one line, without a stack trace. */
class DemoError extends Error {}

// Until the shop has answered once, and while it starts (a service not ready yet answers 503:
// Connect's unavailable, or the ingress's plain-text "upstream connect error"), wait for it.
const waitUntil = Date.now() + waitSeconds * 1000;
let announced = false;

async function call(path, body, token) {
  for (;;) {
    let response;
    let problem;
    try {
      response = await fetch(`${ingress}/${path}`, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          ...(token && { authorization: `Bearer ${token}` }),
        },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(10_000),
      });
    } catch (error) {
      problem = `cannot reach it: ${error.cause?.code ?? error.message}`;
    }
    const text = response ? await response.text() : "";
    let json;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {}
    if (response?.status === 503) problem = `not ready: ${json?.message ?? text.slice(0, 120)}`;
    if (!problem) {
      if (!json)
        throw new DemoError(
          `${path} answered ${response.status} with a body that is not JSON: ${text.slice(0, 200)}`,
        );
      if (!response.ok) throw new DemoError(`${path} failed: ${json.code}: ${json.message}`);
      return json;
    }
    if (Date.now() > waitUntil)
      throw new DemoError(
        `the shop at ${ingress} is not ready after ${waitSeconds} s (${problem}): start it with npm start, or set THINMESH_URL to where it runs`,
      );
    if (!announced) {
      announced = true;
      console.log(
        `waiting for the shop at ${ingress} (${problem}); it may still be starting (npm start), up to ${waitSeconds} s`,
      );
    }
    await sleep(500);
  }
}

const money = (m) => `${(Number(m?.amountMinor ?? 0) / 100).toFixed(2)} ${m?.currencyCode ?? ""}`;

async function waitForOutcome(orderId, token) {
  for (let i = 0; i < 100; i++) {
    const { order } = await call("shop.order.v1.OrderService/GetOrder", { id: orderId }, token);
    if (order.status === "ORDER_STATUS_CONFIRMED" || order.status === "ORDER_STATUS_CANCELLED")
      return order;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new DemoError(`order ${orderId} did not finish within 10 s`);
}

function showOrder(order) {
  console.log(
    `  order ${order.id}: ${bold(order.status.replace("ORDER_STATUS_", ""))}, total ${money(order.total)}`,
  );
  if (order.cancelReason) console.log(`  reason: ${order.cancelReason}`);
  console.log(
    `  trace id ${order.traceId} — the same id on every log line and every hop of this order`,
  );
  for (const entry of order.timeline ?? []) {
    console.log(
      `    ${entry.time}  ${entry.step.padEnd(22)} ${entry.status.replace("ORDER_STATUS_", "").padEnd(17)} trace ${entry.traceId}${entry.detail ? `  (${entry.detail})` : ""}`,
    );
  }
}

const stockOf = async (id) =>
  (await call("shop.catalog.v1.CatalogService/GetProduct", { id })).product.stockAvailable ?? 0;

async function walkthrough() {
  console.log(bold(`1. Register and log in (${ingress})`));
  const email = `demo-${randomUUID().slice(0, 8)}@example.com`;
  const password = "correct horse battery staple";
  await call("shop.auth.v1.AuthService/Register", { email, password });
  const { tokens } = await call("shop.auth.v1.AuthService/Login", { email, password });
  console.log(`  ${email} has an access token (ES256, 15 minutes) and a refresh token`);

  console.log(bold("\n2. Browse"));
  const { products } = await call("shop.catalog.v1.CatalogService/ListProducts", { pageSize: 5 });
  for (const p of products)
    console.log(
      `  ${p.sku.padEnd(16)} ${money(p.price).padStart(12)}  ${String(p.stockAvailable ?? 0).padStart(4)} in stock  ${p.name}`,
    );
  const cheap = products.find(
    (p) => (p.stockAvailable ?? 0) >= 2 && Number(p.price.amountMinor) <= 10_000,
  );
  if (!cheap)
    throw new DemoError(
      "no product with stock to order: restart the shop with a fresh .data/ or set stock as admin",
    );

  console.log(
    bold("\n3. Place an order; the saga runs: stock reserved → payment captured → CONFIRMED"),
  );
  const placed = await call(
    "shop.order.v1.OrderService/PlaceOrder",
    {
      idempotencyKey: randomUUID(),
      items: [{ productId: cheap.id, quantity: 2, expectedUnitPrice: cheap.price }],
      paymentToken: "tok_test_visa",
    },
    tokens.accessToken,
  );
  console.log(`  PlaceOrder answered at once: ${placed.order.status.replace("ORDER_STATUS_", "")}`);
  showOrder(await waitForOutcome(placed.order.id, tokens.accessToken));

  console.log(
    bold("\n4. An order over the payment limit (EUR 500.00): declined → CANCELLED, stock restored"),
  );
  const limitMinor = 50_000; // payment's PAYMENT_DECLINE_ABOVE_MINOR default
  const quantityOver = (p) => Math.floor(limitMinor / Number(p.price.amountMinor)) + 1;
  const pricey = products.find((p) => quantityOver(p) <= Math.min(100, p.stockAvailable ?? 0));
  if (!pricey) throw new DemoError("no product with enough stock to go over the payment limit");
  const stockBefore = await stockOf(pricey.id);
  const declined = await call(
    "shop.order.v1.OrderService/PlaceOrder",
    {
      idempotencyKey: randomUUID(),
      items: [{ productId: pricey.id, quantity: quantityOver(pricey) }],
      paymentToken: "tok_test_visa",
    },
    tokens.accessToken,
  );
  showOrder(await waitForOutcome(declined.order.id, tokens.accessToken));
  // The release is one more event hop (order → catalog) after the order is CANCELLED.
  let stockAfter = await stockOf(pricey.id);
  for (let i = 0; i < 50 && stockAfter !== stockBefore; i++) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    stockAfter = await stockOf(pricey.id);
  }
  console.log(
    `  stock of ${pricey.sku}: ${stockBefore} before, ${stockAfter} after${stockAfter === stockBefore ? " (restored)" : " (NOT restored)"}`,
  );
}

try {
  await walkthrough();
} catch (error) {
  if (!(error instanceof DemoError)) throw error;
  console.error(`demo: ${error.message}`);
  process.exitCode = 1;
}
