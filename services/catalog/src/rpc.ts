import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  CatalogService,
  type ProductSchema,
} from "@thinmesh/contracts/shop/catalog/v1/catalog_pb.js";
import type { Money } from "@thinmesh/contracts/shop/common/v1/money_pb.js";
import { bind, invalidArgument, type ServiceBinding } from "@thinmesh/platform";
import type { Product, ProductStore } from "./domain/product.js";
import {
  createProduct,
  getProduct,
  getProducts,
  listProducts,
  setStock,
} from "./domain/products.js";

/**
 * The CatalogService RPCs: each one translates the request for the domain and its result
 * back. Validation (protovalidate), access rules and error codes are the platform's business.
 */
export function catalogRpc(store: ProductStore): ServiceBinding {
  const implementation: ServiceImpl<typeof CatalogService> = {
    async listProducts(request) {
      const page = await listProducts(store, request);
      return { products: page.products.map(productMessage), nextPageToken: page.nextPageToken };
    },
    async getProduct(request) {
      return { product: productMessage(await getProduct(store, request.id)) };
    },
    async getProducts(request) {
      const found = await getProducts(store, request.ids);
      return { products: found.products.map(productMessage), missingIds: found.missingIds };
    },
    async createProduct(request) {
      const product = await createProduct(store, {
        sku: request.sku,
        name: request.name,
        description: request.description,
        price: requiredMoney(request.price, "price"),
        initialStock: request.initialStock,
      });
      return { product: productMessage(product) };
    },
    async setStock(request) {
      return {
        product: productMessage(await setStock(store, request.productId, request.quantity)),
      };
    },
  };
  return bind(CatalogService, implementation, {
    listProducts: "public",
    getProduct: "public",
    getProducts: "internal",
    createProduct: { role: "admin" },
    setStock: { role: "admin" },
  });
}

function productMessage(product: Product): MessageInitShape<typeof ProductSchema> {
  return {
    id: product.id,
    sku: product.sku,
    name: product.name,
    description: product.description,
    price: { currencyCode: product.price.currencyCode, amountMinor: product.price.amountMinor },
    stockAvailable: product.stockAvailable,
    createTime: timestampFromDate(product.createdAt),
    updateTime: timestampFromDate(product.updatedAt),
  };
}

// The contract marks price required and the validation interceptor enforces it; this keeps
// the types honest.
function requiredMoney(money: Money | undefined, field: string) {
  if (!money) throw invalidArgument(`${field}: value is required`);
  return { currencyCode: money.currencyCode, amountMinor: money.amountMinor };
}
