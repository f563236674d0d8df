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
