/**
 * Go/CEL duration strings ("1.5s", "300ms", "1h2m"), as Istio's CRDs and CEL's duration()
 * accept them. Returns nanoseconds, or undefined when the string is not a duration.
 */
export function parseDuration(text: unknown): number | undefined {
  if (typeof text !== "string") return undefined;
  if (text === "0") return 0;
  const match = /^([-+]?)((?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|ms|s|m|h))+$/.exec(text);
  if (!match) return undefined;
  const unit: Record<string, number> = {
    ns: 1,
    us: 1e3,
    µs: 1e3,
    ms: 1e6,
    s: 1e9,
    m: 60e9,
    h: 3600e9,
  };
  let total = 0;
  for (const part of text
    .slice(match[1]!.length)
    .matchAll(/(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)/g)) {
    total += Number(part[1]) * unit[part[2]!]!;
  }
  return match[1] === "-" ? -total : Math.round(total);
}

/**
 * Istio's rule for every duration in its networking API (ValidateDuration): at least 1ms and a
 * whole number of milliseconds. Returns a problem, or undefined when the duration is valid.
 */
export function istioDurationProblem(text: unknown): string | undefined {
  const ns = parseDuration(text);
  if (ns === undefined) {
    return `${JSON.stringify(text)} is not a duration (use e.g. "500ms", "2s", "1m")`;
  }
  if (ns < 1e6) return `${JSON.stringify(text)}: duration must be at least 1ms`;
  if (ns % 1e6 !== 0)
    return `${JSON.stringify(text)}: only durations to ms precision are supported`;
  return undefined;
}
