import type { AccessRecord } from "./sidecar/telemetry.js";

/** One log record as one readable line: time, level, message, fields, and the error's message. */
export function readable(line: string): string {
  let record: Record<string, unknown>;
  try {
    record = JSON.parse(line);
  } catch {
    return line;
  }
  if (!record || typeof record !== "object") return line;
  // service and version are the prefix; stderr is the raw text behind msg (shown with --json).
  const { level, time, msg, service: _s, version: _v, err, stderr: _e, ...rest } = record;
  const extra = Object.keys(rest).length ? ` ${JSON.stringify(rest)}` : "";
  const cause = typeof err === "string" ? err : (err as { message?: unknown } | undefined)?.message;
  return `${String(time ?? "").slice(11, 19)} ${level ?? ""} ${msg ?? ""}${extra}${cause ? `: ${cause}` : ""}`;
}

/** One access record as a readable line: who called whom, what, and what came of it. */
export function accessLine(record: AccessRecord): string {
  // The service, and the version that answered (none when the proxy answered itself).
  const service =
    record.destination_canonical_service ?? record.destination_service?.split(".")[0] ?? "?";
  const destination = `${service}${record.destination_version ? `/${record.destination_version}` : ""}`;
  const flags = record.response_flags === "-" ? "" : ` ${record.response_flags}`;
  const attempts = record.attempts > 1 ? ` (${record.attempts} attempts)` : "";
  const trace = record.trace_id ? ` trace ${record.trace_id}` : "";
  return `${record.start_time.slice(11, 19)} → ${destination} ${record.method} ${record.path} ${record.response_code}${flags} ${record.duration} ms${attempts}${trace}`;
}
