import http2 from "node:http2";
import { connect } from "node:net";
import { authorityOf } from "../forward.js";
import { forwardClientCert, type InboundPeer } from "../identity/index.js";
import {
  authorize,
  ConnectionPool,
  createRequestAuthenticator,
  isOverflow,
  type MeshConfig,
  removeQueryParam,
  trafficPolicyFor,
} from "../mesh/index.js";
import {
  type DownstreamRequest,
  type DownstreamResponse,
  downstreamGone,
  headerOf,
  listenerLimits,
  localReply,
  type ProxiedRequest,
  readDownstream,
} from "./downstream.js";
import type { EndpointRegistry, Instance } from "./instances.js";
import { ingressGateway, type PeerDirectory, peerWorkloadOf } from "./instances.js";
import { localReply as localReplies } from "./outbound.js";
import {
  type AccessRecord,
  accessRecord,
  destinationFields,
  sourceFields,
  type Telemetry,
  traceHop,
  unknownPeer,
} from "./telemetry.js";
import {
  relayEndFlags,
  relayResponse,
  SessionPool,
  sendUpstream,
  upstreamResetReply,
} from "./upstream.js";

export interface InboundOptions {
  instance: Instance;
  /** Where the app listens: a Unix socket no other workload can reach over the network. */
  appSocket: string;
  config(): MeshConfig;
  endpoints: EndpointRegistry;
  telemetry: Telemetry;
  /** Fetches a JWKS the way this workload's sidecar does: through its own outbound side. */
  fetchJwks(uri: string): Promise<unknown>;
  /** The workloads of the mesh's client certificates (Istio: peer metadata exchange). */
  peers: PeerDirectory;
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

  // Istio gives the inbound cluster the connectionPool of the service's DestinationRule (its
  // top level; "circuit breakers need to be set on the receiver end as well"): requests in
  // progress to the app beyond http2MaxRequests are the inbound side's 503 UO. A changed
  // policy starts a new pool, as a pushed cluster does; an unchanged one keeps its counts.
  let appPool: { config: MeshConfig; json: string; pool: ConnectionPool } | undefined;
  const appPoolFor = (config: MeshConfig) => {
    if (appPool?.config === config) return appPool.pool;
    const settings = trafficPolicyFor(config, instance.app).connectionPool;
    const json = JSON.stringify(settings);
    const pool = appPool?.json === json ? appPool.pool : new ConnectionPool(settings);
    appPool = { config, json, pool };
    return pool;
  };

  /** The caller's workload, for telemetry: known by its certificate, else unknown (plaintext). */
  const sourceOf = (peer: InboundPeer) =>
    options.peers.of(peer.certificateHash) ??
    (peer.principal === ingressGateway.principal ? ingressGateway : unknownPeer);

  function record(
    request: Omit<ProxiedRequest, "res" | "target">,
    peer: InboundPeer,
    fields: Partial<AccessRecord>,
  ) {
    const source = sourceOf(peer);
    options.telemetry.record(
      accessRecord(request, {
        reporter: "destination",
        route_name: "default",
        upstream_host: `unix:${options.appSocket}`,
        upstream_cluster: "inbound|8080||",
        requested_server_name: peer.tls
          ? `outbound_.8080_._.${instance.app}.${instance.namespace}.svc.cluster.local`
          : null,
        ...sourceFields(source),
        source_principal: peer.principal ?? null,
        destination_service: `${instance.app}.${instance.namespace}.svc.cluster.local`,
        ...destinationFields(peerWorkloadOf(instance)),
        connection_security_policy: peer.tls ? "mutual_tls" : "none",
        attempts: 1,
        ...fields,
      }),
    );
  }

  const reply = (
    req: DownstreamRequest,
    res: DownstreamResponse,
    status: number,
    body: string,
    headers: Record<string, string> = {},
  ) => localReply(req, res, status, body, headers);

  async function handle(req: DownstreamRequest, res: DownstreamResponse, peer: InboundPeer) {
    const request = await readDownstream(req, res, listenerLimits, (refusal) =>
      record(refusal.request, peer, refusal.fields),
    );
    if (!request) return;
    const config = options.config();
    const { headers } = request;
    // This proxy's span; a caller outside the mesh's traces starts one here.
    traceHop(request, config.tracing.samplingPercentage);
    const query = new URLSearchParams(request.target.slice(request.path.length));
    const header = (name: string) => headerOf(headers, name);
    const authority = authorityOf(req);

    // Envoy's buildOriginalUri(headers, 256), the realm of jwt_authn's challenge.
    const scheme = req.headers[":scheme"] ?? (peer.tls ? "https" : "http");
    const uri = `${scheme}://${authority ?? ""}${request.target.slice(0, 256)}`;
    const authn = await authenticatorFor(config).authenticate({ header, query, uri });
    if (!authn.ok) {
      return record(request, peer, {
        ...reply(req, res, authn.status, authn.body, authn.headers),
        // Envoy's generateRcDetails: the message, its spaces as underscores.
        response_code_details: `jwt_authn_access_denied{${authn.body.replace(/[ \t\f\v\n\r]/g, "_")}}`,
      });
    }
    const decision = authorize(
      config,
      { namespace: instance.namespace, labels: instance.labels },
      {
        ...(peer.principal ? { principal: peer.principal } : {}),
        ...(authn.claims ? { claims: authn.claims } : {}),
        method: request.method,
        path: request.path,
        ...(authority === undefined ? {} : { host: authority }),
        port: 8080,
        // Envoy's HTTP/1 codec makes Host the :authority; both names read it.
        header: (name) => (name === ":authority" || name === "host" ? authority : header(name)),
      },
    );
    if (!decision.allowed) {
      return record(request, peer, {
        ...reply(req, res, decision.status, decision.body),
        response_code_details: `rbac_access_denied_matched_policy[${decision.policy ?? "none"}]`,
      });
    }
    // forwardOriginalToken false: the verified token leaves where it was read (Envoy's removeJwt).
    for (const at of authn.remove) {
      if ("header" in at) delete headers[at.header];
      else request.target = removeQueryParam(request.target, at.param);
    }
    // What the client claimed of certificates goes; the proxy states the peer it verified.
    const xfcc = forwardClientCert(header("x-forwarded-client-cert"), peer, selfSpiffe);
    if (xfcc === undefined) delete headers["x-forwarded-client-cert"];
    else headers["x-forwarded-client-cert"] = xfcc;

    const lease = appPoolFor(config).acquire();
    if (isOverflow(lease)) {
      return record(request, peer, {
        ...reply(req, res, 503, localReplies.overflow, { "x-envoy-overloaded": "true" }),
        response_flags: "UO",
        response_code_details: upstreamResetReply("overflow", false).details,
      });
    }
    const sentAt = performance.now();
    const downstream = downstreamGone(request);
    const result = await sendUpstream(app.get("app"), {
      method: request.method,
      path: request.target,
      authority: authority ?? `${instance.app}:8080`,
      headers,
      body: request.body,
      signal: downstream,
    });
    if (result.kind !== "response") lease.release();
    if (downstream.aborted) {
      if (result.kind === "response") result.stream.close(http2.constants.NGHTTP2_CANCEL);
      lease.release();
      return record(request, peer, {
        response_code: 0,
        response_flags: "DC",
        response_code_details: "downstream_remote_disconnect",
      });
    }
    if (result.kind !== "response") {
      // Only the app's connection ending takes it down; a stream reset leaves it to the others.
      if (result.kind === "connect-failure" || result.kind === "reset") app.drop("app");
      const answer =
        result.kind === "timeout"
          ? upstreamResetReply("connection termination", false)
          : upstreamResetReply(result.resetReason, false, result.transportFailure);
      return record(request, peer, {
        ...reply(req, res, 503, answer.body),
        response_flags: answer.flag,
        response_code_details: answer.details,
        upstream_transport_failure_reason:
          "transportFailure" in result ? (result.transportFailure ?? null) : null,
      });
    }
    // Envoy's x-envoy-upstream-service-time: from the whole request to the app's headers.
    const serviceTime = Math.floor(performance.now() - sentAt);
    result.headers["x-envoy-upstream-service-time"] = String(serviceTime);
    relayResponse(req, res, result, (bytes, grpcStatus, ending) => {
      lease.release();
      record(request, peer, {
        response_code: result.status,
        response_flags: relayEndFlags[ending].join(",") || "-",
        bytes_sent: bytes,
        upstream_service_time: serviceTime,
        grpc_status: grpcStatus,
      });
    });
  }

  return { handle, close: () => app.close() };
}
