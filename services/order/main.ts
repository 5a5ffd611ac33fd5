import { runService } from "../../kit/main.js";
import { orderService } from "./service.js";

await runService(orderService);
