// GetPayment over a real port with Connect, gRPC and gRPC-Web clients, and the outbox's admin
// routes that the runner serves with payment's token verifier.
import { randomUUID } from "node:crypto";
import { Code, createClient } from "@connectrpc/connect";
import { createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { PaymentService, PaymentStatus } from "@thinmesh/contracts/shop/payment/v1/payment_pb.js";
import { rpcError } from "@thinmesh/platform/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { testTokens } from "../src/domain/simulator.js";
import { simulatorFor } from "../src/service.js";
import {
  paymentRequested,
  paymentRequestedEvent,
  settledFor,
  startTestPayment,
  type TestPayment,
} from "./support.js";

let payment: TestPayment;

beforeAll(async () => {
  payment = await startTestPayment(
    "payment_rpc",
    {},
    {
      provider: (config) => {
        const simulator = simulatorFor(config);
        return {
          charge: (request) =>
            request.paymentToken === "tok_test_hangs"
              ? new Promise(() => {})
              : simulator.charge(request),
        };
      },
    },
  );
});
afterAll(async () => {
  await payment?.stop();
});

/** Charges a new order through the event sink; resolves to its order id. */
async function chargedOrder(overrides: Parameters<typeof paymentRequested>[0] = {}) {
  const requested = paymentRequested(overrides);
  await payment.sink.deliverOne(paymentRequestedEvent(requested));
  await settledFor(payment.service, requested.orderId);
  return requested;
}

describe("GetPayment", () => {
  it("returns a captured payment with its ledger entries", async () => {
    const requested = await chargedOrder({ amount: { currencyCode: "EUR", amountMinor: 4_990n } });
    const { payment: found } = await payment.client.getPayment({ orderId: requested.orderId });
    expect(found).toMatchObject({
      id: expect.stringMatching(/^[0-9a-f-]{36}$/),
      orderId: requested.orderId,
      status: PaymentStatus.CAPTURED,
      amount: { currencyCode: "EUR", amountMinor: 4_990n },
      declineReason: "",
      providerReference: expect.stringMatching(/^sim_/),
    });
    expect(found?.ledger.map((entry) => [entry.kind, entry.amount?.amountMinor])).toEqual([
      [`capture debit customer:${requested.userId}`, 4_990n],
      ["capture credit merchant", 4_990n],
    ]);
    expect(found?.ledger[0]?.time?.seconds).toBeGreaterThan(0n);
    expect(found?.createTime?.seconds).toBeGreaterThan(0n);
  });

  it("returns a declined payment with its reason and no ledger entries", async () => {
    const requested = await chargedOrder({ paymentToken: testTokens.declined });
    const { payment: found } = await payment.client.getPayment({ orderId: requested.orderId });
    expect(found).toMatchObject({
      status: PaymentStatus.DECLINED,
      declineReason: "card declined",
      providerReference: "",
      ledger: [],
    });
  });

  it("is failed_precondition while the order's charge is pending", async () => {
    // The provider never answers this one: the payment stays PENDING.
    const requested = paymentRequested({ paymentToken: "tok_test_hangs" });
    await payment.sink.deliverOne(paymentRequestedEvent(requested));
    const error = await rpcError(payment.client.getPayment({ orderId: requested.orderId }));
    expect(error.code).toBe(Code.FailedPrecondition);
    expect(error.rawMessage).toMatch(/still being charged/);
  });

  it("is not_found naming an order without a payment", async () => {
    const orderId = randomUUID();
    const error = await rpcError(payment.client.getPayment({ orderId }));
    expect(error.code).toBe(Code.NotFound);
    expect(error.rawMessage).toContain(orderId);
  });

  it("refuses an order id that is not a UUID as invalid_argument", async () => {
    const error = await rpcError(payment.client.getPayment({ orderId: "order-42" }));
    expect(error.code).toBe(Code.InvalidArgument);
    expect(error.rawMessage).toMatch(/order_id/);
  });
});

describe("other protocols on the same port", () => {
  it("serves GetPayment over gRPC (HTTP/2)", async () => {
    const grpc = createClient(
      PaymentService,
      createGrpcTransport({ baseUrl: payment.service.url }),
    );
    const requested = await chargedOrder();
    const { payment: found } = await grpc.getPayment({ orderId: requested.orderId });
    expect(found?.status).toBe(PaymentStatus.CAPTURED);
    const error = await rpcError(grpc.getPayment({ orderId: randomUUID() }));
    expect(error.code).toBe(Code.NotFound);
  });

  it("serves GetPayment over gRPC-Web (HTTP/1.1)", async () => {
    const grpcWeb = createClient(
      PaymentService,
      createGrpcWebTransport({ baseUrl: payment.service.url, httpVersion: "1.1" }),
    );
    const requested = await chargedOrder({ amount: { currencyCode: "EUR", amountMinor: 60_000n } });
    const { payment: found } = await grpcWeb.getPayment({ orderId: requested.orderId });
    expect(found).toMatchObject({
      status: PaymentStatus.DECLINED,
      declineReason: "amount exceeds the limit of EUR 500.00",
    });
  });
});

describe("the outbox's admin routes", () => {
  it("list dead events for an admin token only", async () => {
    const url = `${payment.service.url}/admin/outbox/dead`;
    expect((await fetch(url)).status).toBe(401);
    const customer = await payment.issuer.token({ roles: [] });
    expect((await fetch(url, { headers: { authorization: `Bearer ${customer}` } })).status).toBe(
      403,
    );
    const admin = await payment.issuer.token({ roles: ["admin"] });
    const response = await fetch(url, { headers: { authorization: `Bearer ${admin}` } });
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ dead: [] });
  });
});
