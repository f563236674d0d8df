// The benchmarks' HTTP client: node:http with keep-alive rather than fetch, because the load
// generator shares the machine's two cores with the shop and should spend as little CPU per
// request as it can. A base is an http:// URL or `unix:<path>`, an app's own Unix socket
// (with the sidecars, an app listens on nothing else).
import http from "node:http";

const agent = new http.Agent({ keepAlive: true, maxSockets: 512 });

function target(base, path) {
  if (base.startsWith("unix:")) return { socketPath: base.slice("unix:".length), path: `/${path}` };
  const url = new URL(`${base}/${path}`);
  return { host: url.hostname, port: url.port, path: url.pathname };
}

function send(base, path, { method, headers = {}, body }) {
  return new Promise((resolve, reject) => {
    const request = http.request({ ...target(base, path), method, agent, headers }, (response) => {
      const chunks = [];
      response.on("data", (chunk) => chunks.push(chunk));
      response.on("error", reject);
      response.on("end", () =>
        resolve({ status: response.statusCode, text: Buffer.concat(chunks).toString("utf8") }),
      );
    });
    request.on("error", reject);
    request.end(body);
  });
}

/** A Connect unary call in JSON (what a browser sends through the ingress). */
export async function rpc(base, path, body, token) {
  const payload = JSON.stringify(body);
  const { status, text } = await send(base, path, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      "content-length": Buffer.byteLength(payload),
      ...(token && { authorization: `Bearer ${token}` }),
    },
    body: payload,
  });
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    throw new Error(`${path}: status ${status}: ${text.slice(0, 200)}`);
  }
  if (status === 200) return json;
  throw new Error(`${path}: ${json.code} ${json.message}`);
}

/** GET base/path; the body as text. */
export async function get(base, path) {
  const { status, text } = await send(base, path, { method: "GET" });
  if (status !== 200) throw new Error(`GET ${path}: status ${status}: ${text.slice(0, 200)}`);
  return text;
}
