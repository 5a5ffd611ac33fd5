import { runService } from "../../kit/main.js";
import { productService } from "./service.js";

await runService(productService);
