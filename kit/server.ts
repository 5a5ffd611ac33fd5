import { randomUUID } from "node:crypto";
import { once } from "node:events";
import * as grpc from "@grpc/grpc-js";
import { HealthImplementation } from "grpc-health-check";
import type { CallContext } from "./context.js";
import { isBusy } from "./db.js";
import { guardDeserialize, Malformed, malformedError } from "./decode.js";
import { Code, ServiceError } from "./errors.js";
import { type Faults, injectFault } from "./faults.js";
import { guardedServer, statusOf } from "./guard.js";
import type { Logger } from "./logger.js";
import { clipReflectionError, reflectionService } from "./reflection.js";
import { packageOf, type ServiceDefinition, type ServiceImplementation } from "./service.js";

export interface ServeOptions {
  host: string;
  /** 0 picks a free port; RunningServer.port says which. */
  port: number;
  logger: Logger;
  /** How long shutdown waits for in-flight calls before cancelling them. */
  shutdownGraceMs?: number;
}

export interface RunningServer {
  readonly port: number;
  /** host:port to dial. */
  readonly address: string;
  readonly health: HealthImplementation;
  /** Injected faults by rpc name, for fault tests; empty unless a test sets one. */
  readonly faults: Faults;
  /** NOT_SERVING, refuse new calls, let in-flight calls finish up to the grace period. */
  shutdown(): Promise<void>;
}

// Keepalive pings from clients are welcome: they keep idle mesh channels warm through NATs and
// proxies, and reveal dead peers.
const serverOptions: grpc.ServerOptions = {
  "grpc.keepalive_time_ms": 60_000,
  "grpc.keepalive_timeout_ms": 10_000,
  "grpc.keepalive_permit_without_calls": 1,
  "grpc.http2.min_ping_interval_without_data_ms": 5_000,
  // Nothing serves channelz here; its per-call bookkeeping was ~5% of a GetProduct's CPU.
  "grpc.enable_channelz": 0,
};

/**
 * Serves one shopmesh service with health (grpc.health.v1) and reflection (v1 and v1alpha, the
 * full descriptor set), one log line per call, and google.rpc error details on every failure.
 */
export async function serve(
  service: ServiceImplementation,
  options: ServeOptions,
): Promise<RunningServer> {
  const { logger } = options;
  const server = new grpc.Server(serverOptions);
  const health = new HealthImplementation({ "": "SERVING", [service.name]: "SERVING" });
  // Health and reflection refuse undecodable requests as our services do.
  health.addToServer(guardedServer(server));
  reflectionService().addToServer(guardedServer(server, clipReflectionError));

  const domain = packageOf(service.name);
  const faults: Faults = new Map();
  const implementation: grpc.UntypedServiceImplementation = {};
  const definition: ServiceDefinition = {};
  for (const [name, method] of Object.entries(service.definition)) {
    // A body that does not decode is the client's mistake: INVALID_ARGUMENT, not INTERNAL.
    // Responses are encoded by the handler wrappers, so that a failure to encode one is a
    // status they send and log, not one grpc-js sends behind their back.
    definition[name] = {
      ...method,
      requestDeserialize: guardDeserialize(method.path, method.requestDeserialize),
      responseSerialize: (bytes: Buffer) => bytes,
    };
    const encode = method.responseSerialize as (message: unknown) => Buffer;
    const rpc = method.path.slice(method.path.lastIndexOf("/") + 1);
    const handle = service.handlers[name] as Handler;
    const handler: Handler = async (request, ctx) => {
      await injectFault(faults.get(rpc), ctx);
      return handle(request, ctx);
    };
    implementation[name] = method.responseStream
      ? serverStreaming(handler, encode, domain, logger)
      : unary(handler, encode, domain, logger);
  }
  server.addService(definition, implementation);

  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(
      `${options.host}:${options.port}`,
      grpc.ServerCredentials.createInsecure(),
      (error, bound) => (error ? reject(error) : resolve(bound)),
    ),
  );

  let stopping: Promise<void> | undefined;
  return {
    port,
    address: `${options.host}:${port}`,
    health,
    faults,
    shutdown() {
      stopping ??= new Promise<void>((resolve) => {
        health.setStatus("", "NOT_SERVING");
        health.setStatus(service.name, "NOT_SERVING");
        const force = setTimeout(() => server.forceShutdown(), options.shutdownGraceMs ?? 10_000);
        server.tryShutdown(() => {
          clearTimeout(force);
          resolve();
        });
      });
      return stopping;
    },
  };
}

type Handler = (request: unknown, ctx: CallContext) => unknown;

type Call = grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerWritableStream<unknown, unknown>;

/**
 * The context of a call, and the function to call once its status is sent. The AbortSignal is
 * made on first use, and aborts only while the call runs: grpc-js emits "cancelled" after every
 * finished call too, and an AbortError per call was ~6% of a GetProduct's CPU.
 */
function contextOf(call: Call): [CallContext, () => Code | undefined] {
  let controller: AbortController | undefined;
  let state: "running" | "cancelled" | "finished" = "running";
  call.once("cancelled", () => {
    if (state !== "running") return;
    state = "cancelled";
    controller?.abort();
  });
  const raw = call.getDeadline();
  const deadline = raw instanceof Date ? raw : Number.isFinite(raw) ? new Date(raw) : undefined;
  const ctx: CallContext = {
    method: call.getPath(),
    metadata: call.metadata,
    deadline,
    get signal() {
      if (!controller) {
        controller = new AbortController();
        if (state === "cancelled") controller.abort();
      }
      return controller.signal;
    },
    requestId: String(call.metadata.get("x-request-id")[0] ?? randomUUID()),
  };
  // Ends the call's bookkeeping. When the caller already left, the status it got is its own.
  const finish = () => {
    if (state === "running") state = "finished";
    if (state !== "cancelled") return undefined;
    const passed = deadline !== undefined && Date.now() >= deadline.getTime();
    return passed ? Code.DEADLINE_EXCEEDED : Code.CANCELLED;
  };
  return [ctx, finish];
}

/** Turns anything a handler threw into a status; only our own bugs become INTERNAL. */
function toStatus(error: unknown, domain: string, ctx: CallContext, logger: Logger) {
  let failure: ServiceError;
  if (error instanceof ServiceError) {
    failure = error;
  } else if (ctx.signal.aborted) {
    failure = new ServiceError(Code.CANCELLED, "the call was cancelled or its deadline passed");
  } else if (isBusy(error)) {
    failure = new ServiceError(Code.UNAVAILABLE, "the database is busy; retry", {
      reason: "DATABASE_BUSY",
    });
  } else {
    logger.error({ err: error, method: ctx.method, request_id: ctx.requestId }, "handler failed");
    failure = new ServiceError(Code.INTERNAL, "internal error", { reason: "INTERNAL" });
  }
  // Trailers are small: statusOf clips a message that quotes input.
  return statusOf(failure, domain) as grpc.StatusObject;
}

function logCall(logger: Logger, ctx: CallContext, started: number, code: grpc.status) {
  logger.info(
    {
      method: ctx.method,
      code: Code[code],
      duration_ms: Math.round((performance.now() - started) * 1000) / 1000,
      request_id: ctx.requestId,
      // The time the caller allowed, as it arrived: shows deadlines propagating.
      ...(ctx.deadline && { deadline: ctx.deadline.toISOString() }),
    },
    "rpc",
  );
}

function unary(
  handler: Handler,
  encode: (message: unknown) => Buffer,
  domain: string,
  logger: Logger,
): grpc.handleUnaryCall<unknown, unknown> {
  return (call, callback) => {
    const started = performance.now();
    const [ctx, finish] = contextOf(call);
    const run = async () => {
      if (call.request instanceof Malformed) throw malformedError(call.request);
      return encode(await handler(call.request, ctx));
    };
    run().then(
      (response) => {
        logCall(logger, ctx, started, finish() ?? Code.OK);
        callback(null, response);
      },
      (error: unknown) => {
        const status = toStatus(error, domain, ctx, logger);
        logCall(logger, ctx, started, finish() ?? status.code);
        callback(status);
      },
    );
  };
}

function serverStreaming(
  handler: Handler,
  encode: (message: unknown) => Buffer,
  domain: string,
  logger: Logger,
): grpc.handleServerStreamingCall<unknown, unknown> {
  return (call) => {
    const started = performance.now();
    const [ctx, finish] = contextOf(call);
    const run = async () => {
      if (call.request instanceof Malformed) throw malformedError(call.request);
      const messages = (await handler(call.request, ctx)) as AsyncIterable<unknown>;
      for await (const message of messages) {
        if (ctx.signal.aborted) return;
        if (!call.write(encode(message))) await once(call, "drain", { signal: ctx.signal });
      }
    };
    run().then(
      () => {
        logCall(logger, ctx, started, finish() ?? Code.OK);
        call.end();
      },
      (error: unknown) => {
        const status = toStatus(error, domain, ctx, logger);
        logCall(logger, ctx, started, finish() ?? status.code);
        call.emit("error", status);
      },
    );
  };
}
