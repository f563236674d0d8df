export { analyze, type CheckName, checks } from "./analyzer.js";
export {
  allowedEdges,
  edgeKey,
  environmentOf,
  expectedEdges,
  loadRepoFacts,
  type RepoFacts,
} from "./callgraph.js";
export { type Finding, formatFindings } from "./findings.js";
export * from "./objects.js";
export { IstioSchemas, istioCrdPath, validateSchemas } from "./schemas/index.js";
