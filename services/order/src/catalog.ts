import type { DescService } from "@bufbuild/protobuf";
import { type Client, Code, ConnectError } from "@connectrpc/connect";
import { createPeerClient, unavailable } from "@thinmesh/platform";
import type { ProductCatalog } from "./domain/pricing.js";
import { peers } from "./peers.js";

interface Peer {
  service: DescService;
  methods: readonly string[];
}

/** A client of a peer restricted to the methods declared for it in peers.ts. */
export type PeerClient<P extends Peer> = Pick<
  Client<P["service"]>,
  P["methods"][number] & keyof Client<P["service"]>
>;

/** A client for a declared peer at a base URL from configuration (through the mesh). */
export function peerClient<P extends Peer>(peer: P, baseUrl: string): PeerClient<P> {
  const client = createPeerClient(peer.service, baseUrl) as unknown as Record<string, unknown>;
  // Only the declared methods exist at run time too, so the declaration cannot fall behind.
  const declared = peer.methods.map((method) => {
    if (typeof client[method] !== "function") {
      throw new Error(`${peer.service.typeName} has no method "${method}" (see peers.ts)`);
    }
    return [method, client[method]] as const;
  });
  return Object.fromEntries(declared) as PeerClient<P>;
}

export type CatalogClient = PeerClient<typeof peers.catalog>;

export const createCatalogClient = (baseUrl: string): CatalogClient =>
  peerClient(peers.catalog, baseUrl);

// Failures that waiting can fix; the caller may retry PlaceOrder with the same key.
const transientCodes = new Set([
  Code.Unavailable,
  Code.DeadlineExceeded,
  Code.ResourceExhausted,
  Code.Aborted,
]);

/** The catalog as PlaceOrder's pricing needs it, over CatalogService.GetProducts. */
export function productCatalog(client: CatalogClient): ProductCatalog {
  return {
    async findProducts(ids) {
      let response: Awaited<ReturnType<CatalogClient["getProducts"]>>;
      try {
        response = await client.getProducts({ ids });
      } catch (error) {
        const connectError = ConnectError.from(error);
        if (transientCodes.has(connectError.code)) {
          throw unavailable(
            `the catalog cannot price the items right now (${connectError.message}); try again with the same idempotency key`,
          );
        }
        // Anything else is a bug or a misconfiguration here, not the caller's problem: it is
        // logged and answered as internal, never passed on with the catalog's code.
        throw new Error(`catalog GetProducts failed: ${connectError.message}`, { cause: error });
      }
      return {
        products: response.products.map((product) => {
          if (!product.price) throw new Error(`catalog product ${product.id} has no price`);
          return {
            id: product.id,
            sku: product.sku,
            name: product.name,
            price: {
              currencyCode: product.price.currencyCode,
              amountMinor: product.price.amountMinor,
            },
          };
        }),
        missingIds: response.missingIds,
      };
    },
  };
}
