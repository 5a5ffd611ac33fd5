// A container health check: exits 0 when the service in this container reports SERVING for each
// of its proto services.
//
//   SHOP_SERVICE=user SHOP_PORT=50051 node --import tsx scripts/probe.ts
import { env } from "../kit/config.js";
import { registry } from "../services/registry.js";
import { checkServing, serviceName, transportFor } from "./lib/launcher.js";

try {
  const service = registry.get(serviceName(env.string("SHOP_SERVICE", "")));
  const port = env.int("SHOP_PORT", service.port);
  let serving = true;
  for (const protoService of service.protoServices) {
    // Over mutual TLS with the container's own identity when it serves TLS.
    const transport = transportFor({
      service: service.name,
      env: process.env as Record<string, string>,
    });
    serving &&= await checkServing(`127.0.0.1:${port}`, protoService, 2_000, transport);
  }
  if (!serving) console.error(`${service.name} on :${port} is not SERVING`);
  process.exitCode = serving ? 0 : 1;
} catch (error) {
  console.error(`probe: ${error instanceof Error ? error.message : error}`);
  process.exitCode = 1;
}
