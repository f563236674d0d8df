/**
 * Istio's duration grammar (Go's time.ParseDuration, as Istio's CRDs and CEL's duration() take
 * it: "1h2m3.5s", "100ms", "2s") and its rule for networking durations: at least 1ms, whole
 * milliseconds. The one parser of the repository: mesh/check's analyzer and schemas use it too.
 */
const unitNs: Record<string, number> = {
  ns: 1,
  us: 1e3,
  µs: 1e3,
  ms: 1e6,
  s: 1e9,
  m: 60e9,
  h: 3600e9,
};

/** Nanoseconds, or undefined when the text is not a duration (a sign is allowed, as in Go). */
export function parseDuration(text: unknown): number | undefined {
  if (typeof text !== "string") return undefined;
  if (text === "0") return 0;
  const match = /^([-+]?)((?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|ms|s|m|h))+$/.exec(text);
  if (!match) return undefined;
  let ns = 0;
  for (const [, amount, unit] of text
    .slice(match[1]!.length)
    .matchAll(/(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)/g)) {
    ns += Number(amount) * unitNs[unit!]!;
  }
  return match[1] === "-" ? -Math.round(ns) : Math.round(ns);
}

/**
 * Istio's rule for every duration in its networking API (ValidateDuration): at least 1ms and a
 * whole number of milliseconds. A problem, or undefined when the duration is valid.
 */
export function istioDurationProblem(text: unknown): string | undefined {
  const shown = JSON.stringify(text);
  const ns = parseDuration(text);
  if (ns === undefined) {
    return `${shown} is not a duration (Istio's form: "100ms", "2s", "1h2m3.5s")`;
  }
  if (ns < 1e6) return `${shown}: a duration must be at least 1ms`;
  if (ns % 1e6 !== 0) return `${shown}: only whole milliseconds are supported`;
  return undefined;
}

/** Milliseconds, or a problem saying what is wrong with the text. */
export function parseIstioDuration(text: unknown): { ms: number } | { problem: string } {
  const problem = istioDurationProblem(text);
  return problem ? { problem } : { ms: parseDuration(text)! / 1e6 };
}
