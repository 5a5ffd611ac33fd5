// The echo method served through the kit, with its default middleware (per-call log line,
// status mapping, x-request-id, deadline): next to the bare echo server, the kit's per-call cost.
// Started by the benchmark like a service, with its log going to a file:
//
//   SHOP_PORT=0 node --import tsx bench/echo/kit-server.ts
import { fileURLToPath } from "node:url";
import * as protoLoader from "@grpc/proto-loader";
import { env } from "../../kit/config.js";
import type { ServiceDefinition } from "../../kit/contract.js";
import { createLogger, flushLogger } from "../../kit/observability/logger.js";
import { serve } from "../../kit/server.js";

const ECHO_PROTO = fileURLToPath(new URL("echo.proto", import.meta.url));
const { "bench.echo.v1.EchoService": definition } = protoLoader.loadSync(ECHO_PROTO, {
  keepCase: true,
  defaults: true,
}) as unknown as Record<string, ServiceDefinition>;

const logger = createLogger("kit-echo", env.string("SHOP_LOG_LEVEL", "info"));
const server = await serve(
  [
    {
      definition: definition as ServiceDefinition,
      handlers: { Echo: async ({ message }: { message: string }) => ({ message }) },
    },
  ],
  { host: env.string("SHOP_HOST", "127.0.0.1"), port: env.int("SHOP_PORT", 0), logger },
);
logger.info({ address: server.address }, "serving");
process.send?.({ serving: server.address, pid: process.pid });
const stop = async () => {
  await server.shutdown();
  await flushLogger(logger);
  process.exit(0);
};
process.once("SIGTERM", stop);
process.once("SIGINT", stop);
