// The entry point of every service process: runs the registered service that the first argument,
// else SHOP_SERVICE, names, e.g. `SHOP_SERVICE=user node --import tsx services/main.ts`.
import { env } from "../kit/config.js";
import { runService } from "../kit/runtime/index.js";
import { registry } from "./registry.js";

await runService(registry, process.argv[2] ?? env.string("SHOP_SERVICE", ""));
