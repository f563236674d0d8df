// Workload identity and mutual TLS for mesh/local's sidecars: the local CA, SPIFFE
// certificates, the inbound listener (PeerAuthentication modes), the outbound mutual TLS
// client, and x-forwarded-client-cert.
export * from "./ca.js";
export * from "./listener.js";
export * from "./tls.js";
export * from "./xfcc.js";
