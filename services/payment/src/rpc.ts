import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  type PaymentSchema,
  PaymentService,
  PaymentStatus,
} from "@thinmesh/contracts/shop/payment/v1/payment_pb.js";
import { bind, type ServiceBinding } from "@thinmesh/platform";
import type { PaymentStore, SettledPayment } from "./domain/payment.js";
import { getPayment } from "./domain/payments.js";

/**
 * The PaymentService RPCs, for other services and operators inside the mesh. Validation,
 * access and error codes are the platform's business.
 */
export function paymentRpc(store: PaymentStore): ServiceBinding {
  const implementation: ServiceImpl<typeof PaymentService> = {
    async getPayment(request) {
      return { payment: paymentMessage(await getPayment(store, request.orderId)) };
    },
  };
  return bind(PaymentService, implementation, { getPayment: "internal" });
}

const statusOf = {
  CAPTURED: PaymentStatus.CAPTURED,
  DECLINED: PaymentStatus.DECLINED,
} as const;

function paymentMessage(payment: SettledPayment): MessageInitShape<typeof PaymentSchema> {
  return {
    id: payment.id,
    orderId: payment.orderId,
    status: statusOf[payment.status],
    amount: payment.amount,
    declineReason: payment.declineReason ?? "",
    providerReference: payment.providerReference ?? "",
    // The contract's LedgerEntry has no account or direction (and Money cannot be negative),
    // so both travel in kind: "capture debit customer:<user id>", "capture credit merchant".
    ledger: payment.ledger.map((entry) => ({
      kind: `${entry.kind} ${entry.direction} ${entry.account}`,
      amount: entry.amount,
      time: timestampFromDate(entry.createdAt),
    })),
    createTime: timestampFromDate(payment.createdAt),
  };
}
