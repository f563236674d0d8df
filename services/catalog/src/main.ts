import { runMain } from "@thinmesh/platform";
import { catalogService } from "./service.js";

await runMain(catalogService);
