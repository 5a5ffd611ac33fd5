// The bare grpc-js echo server: the ceiling for this runtime on this machine. One unary method,
// no interceptors, no logging, no database. Started by bench/run.ts as its own process:
//
//   ECHO_PORT=50099 node --import tsx bench/echo/server.ts
//
// Prints one JSON line {"listening":"host:port"} once bound; SIGTERM shuts it down.
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

const ECHO_PROTO = fileURLToPath(new URL("echo.proto", import.meta.url));

interface EchoMessage {
  message: string;
}

type EchoPackage = {
  bench: { echo: { v1: { EchoService: grpc.ServiceClientConstructor } } };
};

const definition = protoLoader.loadSync(ECHO_PROTO, { keepCase: true, defaults: true });
const loaded = grpc.loadPackageDefinition(definition) as unknown as EchoPackage;

// grpc-js defaults, except channelz, which the shop services turn off too (kit/server.ts).
const server = new grpc.Server({ "grpc.enable_channelz": 0 });
server.addService(loaded.bench.echo.v1.EchoService.service, {
  Echo: (
    call: grpc.ServerUnaryCall<EchoMessage, EchoMessage>,
    callback: grpc.sendUnaryData<EchoMessage>,
  ) => callback(null, { message: call.request.message }),
});

const host = process.env.ECHO_HOST || "127.0.0.1";
const port = Number(process.env.ECHO_PORT || 0);
server.bindAsync(`${host}:${port}`, grpc.ServerCredentials.createInsecure(), (error, bound) => {
  if (error) {
    console.error(`echo: cannot bind ${host}:${port}: ${error.message}`);
    process.exit(1);
  }
  console.log(JSON.stringify({ listening: `${host}:${bound}` }));
  process.send?.({ serving: `${host}:${bound}`, pid: process.pid });
});

const stop = () => server.tryShutdown(() => process.exit(0));
process.once("SIGTERM", stop);
process.once("SIGINT", stop);
