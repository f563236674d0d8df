import { runMain } from "@thinmesh/platform";
import { authService } from "./service.js";

await runMain(authService);
