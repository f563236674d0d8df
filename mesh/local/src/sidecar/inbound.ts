import http2 from "node:http2";
import { connect } from "node:net";
import { formatXfcc, type InboundPeer } from "../identity/index.js";
import { authorize, createRequestAuthenticator, type MeshConfig } from "../mesh/index.js";
import { headerOf, readDownstream } from "./downstream.js";
import type { EndpointRegistry, Instance } from "./instances.js";
import { ingressGateway } from "./instances.js";
import type { DownstreamRequest, DownstreamResponse, ProxiedRequest } from "./outbound.js";
import { type AccessRecord, type Telemetry, traceIdOf } from "./telemetry.js";
import { relayResponse, SessionPool, sendUpstream } from "./upstream.js";

export interface InboundOptions {
  instance: Instance;
  /** Where the app listens: a Unix socket no other workload can reach over the network. */
  appSocket: string;
  config(): MeshConfig;
  endpoints: EndpointRegistry;
  telemetry: Telemetry;
  /** Fetches a JWKS the way this workload's sidecar does: through its own outbound side. */
  fetchJwks(uri: string): Promise<unknown>;
}

/**
 * The inbound side of one workload instance, in the order of Envoy's HTTP filters as Istio
 * configures them: the peer's mTLS identity (the listener verified it), JWT authentication
 * (RequestAuthentication), authorization (AuthorizationPolicy), then the app over its socket,
 * with the caller's identity in x-forwarded-client-cert.
 */
export function createInbound(options: InboundOptions) {
  const { instance } = options;
  const selfSpiffe = `spiffe://${instance.principal}`;
  const app = new SessionPool(() =>
    http2.connect("http://localhost", { createConnection: () => connect(options.appSocket) }),
  );
  let authenticator: ReturnType<typeof createRequestAuthenticator> | undefined;
  let authenticatorConfig: MeshConfig | undefined;
  const authenticatorFor = (config: MeshConfig) => {
    if (authenticatorConfig !== config) {
      authenticator = createRequestAuthenticator(
        config,
        { namespace: instance.namespace, labels: instance.labels },
        (uri) => options.fetchJwks(uri) as never,
      );
      authenticatorConfig = config;
    }
    return authenticator!;
  };

  /** Which workload a peer principal belongs to, for telemetry (Istio reads peer metadata). */
  const sourceOf = (principal: string | undefined) => {
    if (!principal) return { workload: "unknown", version: "unknown" };
    if (principal === ingressGateway.principal) return ingressGateway;
    const peer = options.endpoints.all().find((e) => e.instance.principal === principal);
    return { workload: peer?.instance.app ?? "unknown", version: "unknown" };
  };

  function record(
    request: Pick<ProxiedRequest, "req" | "method" | "path" | "headers" | "startedAt" | "startTime" | "requestId"> & {
      body?: Buffer;
    },
    peer: InboundPeer,
    fields: Partial<AccessRecord>,
  ) {
    const source = sourceOf(peer.principal);
    options.telemetry.record({
      start_time: request.startTime,
      route_name: "default",
      method: request.method,
      path: request.path,
      protocol: `HTTP/${request.req.httpVersion}`,
      response_code: 0,
      response_flags: "-",
      response_code_details: "via_upstream",
      connection_termination_details: null,
      bytes_received: request.body?.length ?? 0,
      bytes_sent: 0,
      duration: Math.round(performance.now() - request.startedAt),
      upstream_service_time: null,
      x_forwarded_for: headerOf(request.headers, "x-forwarded-for") ?? null,
      user_agent: headerOf(request.headers, "user-agent") ?? null,
      request_id: request.requestId,
      authority: (request.req.headers[":authority"] ?? request.req.headers.host ?? null) as
        | string
        | null,
      upstream_host: `unix:${options.appSocket}`,
      upstream_cluster: "inbound|8080||",
      upstream_local_address: null,
      downstream_local_address: request.req.socket
        ? `${request.req.socket.localAddress}:${request.req.socket.localPort}`
        : null,
      downstream_remote_address: request.req.socket
        ? `${request.req.socket.remoteAddress}:${request.req.socket.remotePort}`
        : null,
      requested_server_name: peer.tls ? `outbound_.8080_._.${instance.app}.${instance.namespace}.svc.cluster.local` : null,
      upstream_transport_failure_reason: null,
      reporter: "destination",
      source_workload: source.workload,
      source_version: source.version,
      source_principal: peer.principal ?? null,
      destination_workload: instance.app,
      destination_version: instance.version,
      destination_principal: instance.principal,
      connection_security_policy: peer.tls ? "mutual_tls" : "none",
      grpc_status: null,
      attempts: 1,
      trace_id: traceIdOf(headerOf(request.headers, "traceparent")),
      ...fields,
    });
  }

  function reply(res: DownstreamResponse, status: number, body: string, headers: Record<string, string> = {}) {
    if (res.headersSent) return res.destroy?.();
    res.writeHead(status, {
      "content-type": "text/plain",
      "content-length": String(Buffer.byteLength(body)),
      ...headers,
    });
    res.end(body);
  }

  async function handle(req: DownstreamRequest, res: DownstreamResponse, peer: InboundPeer) {
    const startedAt = performance.now();
    const startTime = new Date().toISOString();
    const request = await readDownstream(req, res, (status, details) =>
      record(
        {
          req,
          method: req.method ?? "",
          path: req.url ?? "",
          headers: {},
          startedAt,
          startTime,
          requestId: String(req.headers["x-request-id"] ?? ""),
        },
        peer,
        { response_code: status, response_flags: status ? "-" : "DC", response_code_details: details },
      ),
    );
    if (!request) return;
    const config = options.config();
    const { headers } = request;
    // Whatever the client claims about certificates is dropped; the proxy states what it saw.
    delete headers["x-forwarded-client-cert"];
    const query = new URLSearchParams(request.path.split("?")[1] ?? "");
    const header = (name: string) => headerOf(headers, name);

    const authn = await authenticatorFor(config).authenticate({ header, query });
    if (!authn.ok) {
      reply(res, authn.status, authn.body, { "www-authenticate": "Bearer realm=\"\", error=\"invalid_token\"" });
      return record(request, peer, {
        response_code: authn.status,
        response_code_details: "jwt_authn_access_denied",
      });
    }
    const decision = authorize(
      config,
      { namespace: instance.namespace, labels: instance.labels },
      {
        ...(peer.principal ? { principal: peer.principal } : {}),
        ...(authn.principal ? { requestPrincipal: authn.principal } : {}),
        ...(authn.claims ? { claims: authn.claims } : {}),
        method: request.method,
        path: request.path.split("?")[0] ?? "/",
        host: header(":authority") ?? header("host") ?? instance.app,
        port: 8080,
        header,
      },
    );
    if (!decision.allowed) {
      reply(res, decision.status, decision.body);
      return record(request, peer, {
        response_code: decision.status,
        response_code_details: `rbac_access_denied_matched_policy[${decision.policy ?? "none"}]`,
      });
    }
    if (authn.stripAuthorization) delete headers.authorization;
    if (peer.tls && peer.spiffeId) {
      headers["x-forwarded-client-cert"] = formatXfcc({
        by: selfSpiffe,
        hash: peer.certificateHash ?? "",
        uri: peer.spiffeId,
      });
    }

    const sentAt = performance.now();
    const result = await sendUpstream(app.get("app"), {
      method: request.method,
      path: request.path,
      authority: header(":authority") ?? header("host") ?? `${instance.app}:8080`,
      headers,
      body: request.body,
    });
    if (result.kind !== "response") {
      app.drop("app");
      reply(
        res,
        503,
        "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
      );
      return record(request, peer, {
        response_code: 503,
        response_flags: result.kind === "connect-failure" ? "UF" : "UC",
        response_code_details: "upstream_reset_before_response_started{connection_failure}",
        upstream_transport_failure_reason: "reason" in result ? result.reason : null,
      });
    }
    relayResponse(req, res, result, (bytes, grpcStatus, error) =>
      record(request, peer, {
        response_code: result.status,
        response_flags: error ? "UPE" : "-",
        bytes_sent: bytes,
        upstream_service_time: Math.round(performance.now() - sentAt),
        grpc_status: grpcStatus,
      }),
    );
  }

  return { handle, close: () => app.close() };
}
