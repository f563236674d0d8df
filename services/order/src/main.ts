import { runMain } from "@thinmesh/platform";
import { orderService } from "./service.js";

await runMain(orderService);
