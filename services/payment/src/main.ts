import { runMain } from "@thinmesh/platform";
import { paymentService } from "./service.js";

await runMain(paymentService);
