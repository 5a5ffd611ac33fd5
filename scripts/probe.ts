// A container health check: exits 0 when the service in this container reports SERVING.
//
//   SHOP_SERVICE=user SHOP_PORT=50051 node --import tsx scripts/lib/probe.ts
import { env } from "../../kit/config.js";
import { checkServing, DEFAULT_PORTS, serviceKind } from "./launcher.js";

try {
  const service = serviceKind(env.string("SHOP_SERVICE", ""));
  const port = env.int("SHOP_PORT", DEFAULT_PORTS[service]);
  const serving = await checkServing(`127.0.0.1:${port}`, service, 2_000);
  if (!serving) console.error(`${service} on :${port} is not SERVING`);
  process.exitCode = serving ? 0 : 1;
} catch (error) {
  console.error(`probe: ${error instanceof Error ? error.message : error}`);
  process.exitCode = 1;
}
