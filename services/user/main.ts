import { runService } from "../../kit/main.js";
import { userService } from "./service.js";

await runService(userService);
