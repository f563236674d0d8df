/**
 * Istio's duration grammar (Go's time.ParseDuration, as Istio's CRDs take it: "1h2m3.5s",
 * "100ms", "2s") and its rule for networking durations: at least 1ms, whole milliseconds.
 * mesh/check/src/durations.ts parses the same grammar for the offline analyzer; mesh/local
 * builds on its own (its rootDir is src), hence this small copy.
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

/** Milliseconds, or a problem saying what is wrong with the text. */
export function parseIstioDuration(text: unknown): { ms: number } | { problem: string } {
  const shown = JSON.stringify(text);
  if (typeof text !== "string" || !/^((\d+(\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h))+$/.test(text)) {
    return { problem: `${shown} is not a duration (Istio's form: "100ms", "2s", "1h2m3.5s")` };
  }
  let ns = 0;
  for (const [, amount, unit] of text.matchAll(/(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)/g)) {
    ns += Number(amount) * unitNs[unit!]!;
  }
  ns = Math.round(ns);
  if (ns < 1e6) return { problem: `${shown}: a duration must be at least 1ms` };
  if (ns % 1e6 !== 0) return { problem: `${shown}: only whole milliseconds are supported` };
  return { ms: ns / 1e6 };
}
