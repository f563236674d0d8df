// mesh/local's identities and mTLS: the local CA, SPIFFE workload certificates, the inbound
// listener (PeerAuthentication's modes) and the mutual-TLS client, x-forwarded-client-cert.
export * from "./ca.js";
export * from "./listener.js";
export * from "./tls.js";
export * from "./xfcc.js";
