// Run as a process of its own by embedded.ts: initdb's memory (~800 MB) goes with it.
import { initPgliteDataDir } from "@thinmesh/platform";

const dir = process.argv[2];
if (!dir) throw new Error("usage: pglite-template.js <data directory to create>");
await initPgliteDataDir(dir);
