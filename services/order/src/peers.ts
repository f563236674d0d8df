import { CatalogService } from "@thinmesh/contracts/shop/catalog/v1/catalog_pb.js";

/**
 * Every RPC this service calls on another service, and nothing else. The mesh analyzer
 * imports this file to derive the call graph (and the AuthorizationPolicies it implies), so it
 * imports only the contracts; the clients are built from it in catalog.ts and expose only
 * these methods, so an undeclared call does not compile.
 */
export const peers = {
  catalog: { service: CatalogService, methods: ["getProducts"] },
} as const;
