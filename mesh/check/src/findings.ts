/** One problem found by a check: which check, which object, and what to fix. */
export interface Finding {
  check: string;
  object?: string;
  message: string;
}

export function formatFindings(findings: readonly Finding[]): string {
  return findings
    .map((f) => `[${f.check}] ${f.object ? `${f.object}: ` : ""}${f.message}`)
    .join("\n");
}
