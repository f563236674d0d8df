import { normalizeRequestTarget } from "../http-path.js";
import type { DownstreamRequest, DownstreamResponse, ProxiedRequest } from "./outbound.js";
import { newRequestId, passOn } from "./upstream.js";

/** The largest request body a proxy buffers (Envoy buffers what it may retry); beyond: 413. */
export const maxRequestBodyBytes = 1024 * 1024;

/**
 * Reads a downstream request the way every mesh/local listener must before routing or
 * policy: the path normalised once (what is matched is what is forwarded), the body read up
 * to a bound. Answers 400 or 413 itself and resolves undefined when the request cannot go on.
 */
export async function readDownstream(
  req: DownstreamRequest,
  res: DownstreamResponse,
  onRefused: (status: number, details: string) => void,
  limit = maxRequestBodyBytes,
): Promise<ProxiedRequest | undefined> {
  const startedAt = performance.now();
  const startTime = new Date().toISOString();
  const refuse = (status: number, body: string, details: string) => {
    if (!res.headersSent) {
      res.writeHead(status, {
        "content-type": "text/plain",
        "content-length": String(Buffer.byteLength(body)),
        ...(req.httpVersionMajor === 1 ? { connection: "close" } : {}),
      });
      res.end(body);
    }
    onRefused(status, details);
    return undefined;
  };
  const target = normalizeRequestTarget(req.url ?? "/");
  if (!target.ok) return refuse(400, "Bad Request", target.reason);
  const declared = Number(req.headers["content-length"] ?? 0);
  if (declared > limit) return refuse(413, "Payload Too Large", "request_payload_too_large");
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of req) {
      size += (chunk as Buffer).length;
      if (size > limit) return refuse(413, "Payload Too Large", "request_payload_too_large");
      chunks.push(chunk as Buffer);
    }
  } catch {
    // The client went away mid-body (Envoy's DC: downstream connection termination).
    onRefused(0, "downstream_remote_disconnect");
    return undefined;
  }
  const headers = passOn(req.headers);
  return {
    req,
    res,
    method: req.method ?? "GET",
    path: target.path,
    headers,
    body: Buffer.concat(chunks),
    startedAt,
    startTime,
    requestId: newRequestId(headers),
  };
}

/** One header's value as a string (repeated ones joined), for matchers. */
export function headerOf(headers: Record<string, string | string[]>, name: string) {
  const value = headers[name];
  return Array.isArray(value) ? value.join(",") : value;
}
