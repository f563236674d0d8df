// Types of canary.js for the TypeScript tests in mesh/check.
export declare const defaultMeshDir: string;
export declare class UsageError extends Error {}
export declare function parseAction(action: string | undefined): number;
export declare function setWeights(
  dir: string,
  service: string,
  percent: number,
): { file: string; text: string };
export declare function main(
  argv: string[],
  io?: { out: { write(text: string): unknown }; err: { write(text: string): unknown } },
): number;
export declare function localShopWarning(
  service: string,
  percent: number,
  adminUrl: string,
): Promise<string | undefined>;
