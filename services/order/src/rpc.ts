import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { OrderService } from "@thinmesh/contracts/shop/order/v1/order_pb.js";
import { bind, caller, currentContext, type ServiceBinding } from "@thinmesh/platform";
import {
  type Caller,
  getOrder,
  listOrders,
  type PlaceOrderDeps,
  placeOrder,
} from "./domain/orders.js";
import { moneyOf, orderMessage } from "./messages.js";

/**
 * The OrderService RPCs: each one translates the request for the domain and its result back.
 * Validation (protovalidate), access rules and error codes are the platform's business.
 */
export function orderRpc(deps: PlaceOrderDeps): ServiceBinding {
  const implementation: ServiceImpl<typeof OrderService> = {
    async placeOrder(request, context) {
      const order = await placeOrder(
        deps,
        callerOf(context),
        {
          idempotencyKey: request.idempotencyKey,
          items: request.items.map((item) => ({
            productId: item.productId,
            quantity: item.quantity,
            expectedUnitPrice: item.expectedUnitPrice && moneyOf(item.expectedUnitPrice),
          })),
          paymentToken: request.paymentToken,
        },
        currentContext()?.traceId ?? "",
      );
      return { order: orderMessage(order) };
    },
    async getOrder(request, context) {
      return { order: orderMessage(await getOrder(deps.store, callerOf(context), request.id)) };
    },
    async listOrders(request, context) {
      const page = await listOrders(deps.store, callerOf(context), request);
      return { orders: page.orders.map(orderMessage), nextPageToken: page.nextPageToken };
    },
  };
  return bind(OrderService, implementation, {
    placeOrder: "authenticated",
    getOrder: "authenticated",
    listOrders: "authenticated",
  });
}

function callerOf(context: HandlerContext): Caller {
  const claims = caller(context);
  return { userId: claims.subject, isAdmin: claims.roles.includes("admin") };
}
