export * from "./bus.js";
export * from "./dead-letters.js";
export * from "./leases.js";
export * from "./relay.js";
export * from "./retention.js";
export * from "./schema.js";
export * from "./sink.js";
export * from "./subscriptions.js";
