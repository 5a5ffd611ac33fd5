import * as grpc from "@grpc/grpc-js";
import { HealthImplementation } from "grpc-health-check";
import { hostPort } from "./config.js";
import {
  type MethodInfo,
  methodsOf,
  packageOf,
  type ServiceDefinition,
  serviceNameOf,
} from "./contract.js";
import {
  chain,
  defaultServerMiddleware,
  type ServerMiddleware,
  type ServerNext,
} from "./middleware/index.js";
import type { Logger } from "./observability/logger.js";
import { EDGE_REFLECTION_HEADER, Reflection, type ReflectionView } from "./reflection.js";
import {
  authContextOf,
  EDGE_IDENTITY,
  peerIdentity,
  serverCredentials,
  type TlsMaterial,
} from "./security/tls.js";
import type { ServiceImplementation } from "./service.js";
import { guardDeserialize, Malformed, malformedError } from "./transport/decode.js";
import {
  answerUnknownMethods,
  framingGuard,
  type Refused,
  type UnknownCall,
} from "./transport/framing.js";
import { readTimeoutsStrictly } from "./transport/grpc-timeout.js";
import { guardedServer } from "./transport/guard.js";
import { MAX_CONCURRENT_STREAMS } from "./transport/limits.js";
import { observeRefusal, serverStreaming, unary } from "./transport/served-calls.js";
import { ServerSessions } from "./transport/server-sessions.js";
import type { OpenStreams } from "./transport/stream-ends.js";

export interface ServeOptions {
  host: string;
  /** 0 picks a free port; RunningServer.port says which. */
  port: number;
  logger: Logger;
  /** How long shutdown waits for in-flight calls before cancelling them. */
  shutdownGraceMs?: number;
  /**
   * How long a shutdown keeps serving, health NOT_SERVING, before it refuses new calls: a load
   * balancer's health check reads NOT_SERVING and takes the replica out before a call is
   * refused. 0: new calls are refused at once.
   */
  shutdownAnnounceMs?: number;
  /**
   * Called as the grace period ends, just before the calls still running are cut: what they do
   * from then on, their callers never learn of (kit/db/closing.ts).
   */
  onGraceEnd?: () => void;
  /**
   * Ask a client to reconnect (GOAWAY) once its connection is this old, so a client resolving a
   * DNS name spreads over replicas added since; absent or 0: never.
   */
  maxConnectionAgeMs?: number;
  /** How long calls in flight on a connection past its age may still take; absent: unbounded. */
  maxConnectionAgeGraceMs?: number;
  /**
   * Also serve grpc.health.v1, and nothing else, in plaintext on this port (0 picks one), for
   * probes that cannot present a mesh certificate. The same statuses as the main port.
   */
  healthPort?: number;
  /** The chain every call goes through, outermost first; defaultServerMiddleware by default. */
  middleware?: readonly ServerMiddleware[];
  /**
   * Runs just before the port opens, when everything else is ready: work that must not stall the
   * first calls, which a health check answered SERVING invites (kit/heap.ts's compaction).
   */
  beforeListen?: () => void;
  /**
   * Told of each call of a method this server does not serve, which the middleware never see
   * (grpc-js answers it UNIMPLEMENTED before any); the server logs it as the logging middleware
   * logs a call.
   */
  onUnknownMethod?: (call: UnknownCall) => void;
  /** Mutual TLS with this identity; plaintext without. */
  tls?: TlsMaterial;
  /**
   * Proto services internal to the mesh: reflection shows them only to callers with a mesh
   * identity other than the edge's.
   */
  internalServices?: readonly string[];
  /**
   * The mesh's public proto services: what reflection lists to a call through the edge. This
   * server's public services when absent.
   */
  publicServices?: readonly string[];
}

export interface RunningServer {
  readonly port: number;
  /** host:port to dial. */
  readonly address: string;
  readonly health: HealthImplementation;
  /** The health-only port, when ServeOptions.healthPort asked for one. */
  readonly healthPort?: number;
  /** NOT_SERVING, refuse new calls, let in-flight calls finish up to the grace period. */
  shutdown(): Promise<void>;
}

// Keepalive pings from clients are welcome: they keep idle mesh channels warm through NATs and
// proxies, and reveal dead peers. The server sends none of its own: grpc-js drops a connection
// whose ping cannot be sent, and none can once the connection is draining (a shutdown, its
// maximum age), so every call still on it was cut early (grpc-node #3068). A dead client's
// connection goes at its maximum age instead.
const serverOptions: grpc.ServerOptions = {
  "grpc.max_concurrent_streams": MAX_CONCURRENT_STREAMS,
  "grpc.keepalive_permit_without_calls": 1,
  "grpc.http2.min_ping_interval_without_data_ms": 1_000,
  // Nothing serves channelz here; its per-call bookkeeping was ~5% of a GetProduct's CPU.
  "grpc.enable_channelz": 0,
};

/**
 * Serves proto services with health (grpc.health.v1, SERVING for each of them and for "") and
 * reflection (v1 and v1alpha: the descriptor set byte for byte, listing what this port serves).
 * Every call runs through the middleware chain to its handler; the kit's core only decodes,
 * encodes and sends, and turns a ServiceError into a status with google.rpc details.
 */
export async function serve(
  services: readonly ServiceImplementation[],
  options: ServeOptions,
): Promise<RunningServer> {
  readTimeoutsStrictly();
  const handles = new Map<string, [ServerNext, MethodInfo]>();
  let stopping: Promise<void> | undefined;
  // Set before the shutdown closes connections: it ends our streams itself, at its grace's end.
  let shuttingDown = false;
  const openStreams: OpenStreams = { ends: new Set(), stopping: () => shuttingDown };
  const refused: Refused = (path, refusal, call) => {
    const route = handles.get(path);
    if (route) observeRefusal(...route, refusal, call);
  };
  const sessions = new ServerSessions();
  const server = new grpc.Server({
    ...serverOptions,
    interceptors: [framingGuard(refused), sessions.interceptor],
    ...(options.maxConnectionAgeMs
      ? {
          "grpc.max_connection_age_ms": options.maxConnectionAgeMs,
          ...(options.maxConnectionAgeGraceMs !== undefined
            ? { "grpc.max_connection_age_grace_ms": options.maxConnectionAgeGraceMs }
            : {}),
        }
      : {}),
  });
  const names = services.map((service) => serviceNameOf(service.definition));
  answerUnknownMethods(server, names[0] ? packageOf(names[0]) : "grpc.health.v1", (call) => {
    // As a served rpc's line; the proto service is in the path (`service` is this process's).
    options.logger.info(
      {
        method: call.method,
        peer: call.peer,
        code: "UNIMPLEMENTED",
        reason: "UNKNOWN_METHOD",
        x_request_id: call.xRequestId,
        ...(call.traceId && { trace_id: call.traceId }),
      },
      "rpc",
    );
    options.onUnknownMethod?.(call);
  });
  const healthNames = new Set(["", ...names]);
  const health = new HealthImplementation(
    Object.fromEntries([...healthNames].map((name) => [name, "SERVING"])),
  );
  // Health and reflection refuse undecodable requests as our services do.
  health.addToServer(guardedServer(server, openStreams, healthNames));
  new Reflection({
    served: names,
    internal: options.internalServices ?? [],
    publicApi: options.publicServices,
  }).addToServer(guardedServer(server), reflectionViewOf);

  const middleware = options.middleware ?? defaultServerMiddleware(options.logger);
  for (const service of services) {
    const domain = packageOf(serviceNameOf(service.definition));
    const infos = methodsOf(service.definition);
    const definition: ServiceDefinition = {};
    const implementation: grpc.UntypedServiceImplementation = {};
    for (const [name, method] of Object.entries(service.definition)) {
      // A body that does not decode, or carries invalid UTF-8 in a string field, is the client's
      // mistake: INVALID_ARGUMENT, not INTERNAL. Responses are encoded here, not by grpc-js, so a
      // response that fails to encode is a status the middleware see like any other.
      definition[name] = {
        ...method,
        requestDeserialize: guardDeserialize(method.path, method.requestDeserialize),
        responseSerialize: (bytes: Buffer) => bytes,
      };
      const handler = (service.handlers as Record<string, ServerNext>)[name] as ServerNext;
      const core: ServerNext = (request, ctx) =>
        request instanceof Malformed
          ? Promise.reject(malformedError(request))
          : handler(request, ctx);
      const info = infos[name] as MethodInfo;
      const handle = chain(middleware, info, core);
      handles.set(method.path, [handle, info]);
      const encode = (message: unknown): Buffer => method.responseSerialize(message);
      implementation[name] = method.responseStream
        ? serverStreaming(handle, info, domain, encode, openStreams)
        : unary(handle, info, domain, encode);
    }
    server.addService(definition, implementation);
  }

  options.beforeListen?.();
  const port = await bind(
    server,
    "grpc",
    hostPort(options.host, options.port),
    serverCredentials(options.tls),
  );

  const probes =
    options.healthPort === undefined
      ? undefined
      : await healthOnly(health, healthNames, options).catch((error: unknown) => {
          server.forceShutdown();
          throw error;
        });

  return {
    port,
    address: hostPort(options.host, port),
    health,
    ...(probes && { healthPort: probes.port }),
    shutdown() {
      stopping ??= new Promise<void>((resolve) => {
        for (const name of ["", ...names]) health.setStatus(name, "NOT_SERVING");
        const announceMs = options.shutdownAnnounceMs ?? 0;
        if (announceMs > 0) setTimeout(() => drain(resolve), announceMs);
        else drain(resolve);
      });
      return stopping;
    },
  };

  /** Refuses new calls, lets those running finish within the grace period, then cuts them. */
  function drain(resolve: () => void) {
    shuttingDown = true;
    const grace = options.shutdownGraceMs ?? 10_000;
    // Our streams still open when the grace period ends (a WatchOrder never ends by itself)
    // end UNAVAILABLE, so their callers call again elsewhere.
    const force = setTimeout(() => {
      options.onGraceEnd?.();
      for (const end of openStreams.ends) end();
      sessions.cutting();
      server.forceShutdown();
      // The calls that answered just now get a little time for their statuses to leave,
      // counted from here: a grace timer that fired late must not leave them less. Then the
      // connections still open are closed with the calls on them (a library's streams).
      // forceShutdown alone does not close them: grpc-js lists them for it only with
      // channelz on, which is off here.
      setTimeout(() => sessions.cut(), STREAMS_END_MS).unref();
    }, grace);
    // GOAWAY on every connection now; each closes once its calls have ended.
    server.tryShutdown(() => {
      clearTimeout(force);
      // The probes see NOT_SERVING until the main port has drained.
      probes?.server.forceShutdown();
      resolve();
    });
  }
}

/**
 * grpc.health.v1 alone, in plaintext: it tells a prober only what the statuses say, so it needs
 * no mesh identity. Any other method is UNIMPLEMENTED here.
 */
async function healthOnly(
  health: HealthImplementation,
  healthNames: ReadonlySet<string>,
  options: ServeOptions,
): Promise<{ server: grpc.Server; port: number }> {
  const server = new grpc.Server({ ...serverOptions, interceptors: [framingGuard(() => {})] });
  answerUnknownMethods(server, "grpc.health.v1");
  health.addToServer(guardedServer(server, undefined, healthNames));
  const address = hostPort(options.host, options.healthPort as number);
  const port = await bind(server, "health", address, grpc.ServerCredentials.createInsecure());
  return { server, port };
}

/** One of a process's ports could not be bound: taken, or on an address this host lacks. */
export class ListenError extends Error {
  constructor(
    readonly listener: "grpc" | "health" | "metrics",
    readonly address: string,
    cause: unknown,
  ) {
    // grpc-js lists each address's own error inside its message.
    const message = (cause as Error).message;
    const reason = /errors: \[(.+)\]$/.exec(message)?.[1] ?? message;
    super(`cannot listen on ${address}: ${reason}`, { cause });
  }
}

function bind(
  server: grpc.Server,
  listener: ListenError["listener"],
  address: string,
  credentials: grpc.ServerCredentials,
): Promise<number> {
  return new Promise((resolve, reject) =>
    server.bindAsync(address, credentials, (error, port) =>
      error ? reject(new ListenError(listener, address, error)) : resolve(port),
    ),
  );
}

/**
 * Who asks reflection: a call Envoy forwards sees the mesh's public API; a mesh identity other
 * than the edge's sees this port's services, internal ones included; anyone else this port's
 * public services.
 */
function reflectionViewOf(call: grpc.ServerDuplexStream<unknown, unknown>): ReflectionView {
  if (call.metadata.get(EDGE_REFLECTION_HEADER).length > 0) return "edge";
  const identity = peerIdentity(authContextOf(call));
  return identity !== undefined && identity !== EDGE_IDENTITY ? "mesh" : "direct";
}

/** How long a shutdown gives its streams' last statuses to leave before it closes connections. */
const STREAMS_END_MS = 250;
