import * as grpc from "@grpc/grpc-js";
import { packageOf } from "../contract.js";
import { clipText, encodeStatus, ServiceError } from "../errors.js";
import { guardDeserialize, Malformed, malformedError } from "./decode.js";
import { endBeforeCut, type OpenStreams } from "./stream-ends.js";

/** Status details are trailers: text that quotes a request is clipped to this many characters. */
export const MAX_STATUS_TEXT = 1024;

const clip = (text: string) => clipText(text, MAX_STATUS_TEXT);

/** A failure as grpc-js sends it: code, clipped details, google.rpc details in the trailers. */
export function statusOf(error: ServiceError, domain: string): grpc.StatusObject {
  const metadata = new grpc.Metadata();
  metadata.set("grpc-status-details-bin", encodeStatus(error, domain));
  return { code: error.code, details: clip(error.message), metadata };
}

type AnyHandler = (...args: never[]) => unknown;

const HEALTH_WATCH = "/grpc.health.v1.Health/Watch";

/**
 * A library's failure as the kit sends its own: clipped, and with google.rpc details (an
 * ErrorInfo whose reason is the code's name) when the library gave none.
 */
function withDetails(
  error: grpc.ServerErrorResponse,
  domain: string,
): grpc.ServerErrorResponse | grpc.StatusObject {
  const details = error.details ?? error.message ?? "";
  if (error.metadata?.get("grpc-status-details-bin").length)
    return { ...error, details: clip(details) };
  return statusOf(new ServiceError(error.code ?? grpc.status.UNKNOWN, details), domain);
}

/**
 * A server to hand to addToServer of health (grpc-health-check) and reflection: the services it
 * adds refuse a request that does not decode with INVALID_ARGUMENT (MALFORMED_REQUEST), as ours
 * do, instead of grpc-js's INTERNAL, and clip the text of the statuses they send.
 *
 * `healthNames`: the names health knows, for the whole life of the process. A Watch of any other
 * name is answered here, SERVICE_UNKNOWN and held open as the protocol says, and never reaches
 * grpc-health-check, which keeps an entry for every name ever watched: a caller watching random
 * names would grow it without end.
 */
export function guardedServer(
  server: Pick<grpc.Server, "addService">,
  open?: OpenStreams,
  healthNames?: ReadonlySet<string>,
): Pick<grpc.Server, "addService"> {
  return {
    addService(definition, implementation) {
      const guarded: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
      const handlers: grpc.UntypedServiceImplementation = {};
      for (const [name, method] of Object.entries(definition)) {
        guarded[name] = {
          ...method,
          requestDeserialize: guardDeserialize(
            method.path,
            method.requestDeserialize,
            (method as { requestType?: { fileDescriptorProtos?: Buffer[] } }).requestType
              ?.fileDescriptorProtos,
          ),
        };
        const domain = packageOf(method.path.split("/")[1] ?? "");
        // grpc-js finds a handler by the rpc's name or by proto-loader's originalName.
        const handler = (implementation[name] ??
          (method.originalName && implementation[method.originalName])) as AnyHandler | undefined;
        if (!handler) continue;
        const known = method.path === HEALTH_WATCH ? healthNames : undefined;
        handlers[name] = method.requestStream
          ? guardStreamingRequests(handler, domain)
          : guardSingleRequest(handler, domain, method.responseStream, open, known);
      }
      server.addService(guarded as grpc.ServiceDefinition, handlers);
    },
  };
}

/**
 * `streaming`: the rpc streams its responses. Given the server's `open` streams, such a stream
 * ends as the kit's own do before grpc-js would cut it (endBeforeCut): a health Watch never ends
 * by itself.
 */
function guardSingleRequest(
  handler: AnyHandler,
  domain: string,
  streaming: boolean,
  open?: OpenStreams,
  healthNames?: ReadonlySet<string>,
) {
  const call = handler as (...args: unknown[]) => unknown;
  if (streaming) {
    return (stream: grpc.ServerWritableStream<unknown, unknown>) => {
      if (stream.request instanceof Malformed) {
        stream.emit("error", statusOf(malformedError(stream.request), domain));
        return;
      }
      if (open) {
        const unwatch = endBeforeCut(stream, open, (error) => {
          unwatch();
          stream.emit("error", statusOf(error, domain));
          // The handler forgets the stream when it is cancelled; grpc-js says so only for a
          // stream the caller left.
          stream.emit("cancelled");
        });
        stream.once("cancelled", unwatch);
        stream.once("finish", unwatch);
      }
      const name = (stream.request as { service?: unknown }).service;
      if (healthNames && !healthNames.has(String(name))) {
        stream.write({ status: "SERVICE_UNKNOWN" });
        return;
      }
      call(stream);
    };
  }
  return (unary: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
    if (unary.request instanceof Malformed) {
      callback(statusOf(malformedError(unary.request), domain));
      return;
    }
    call(unary, (error: grpc.ServerErrorResponse | null, ...rest: unknown[]) =>
      (callback as (...args: unknown[]) => void)(error && withDetails(error, domain), ...rest),
    );
  };
}

/**
 * Client-streaming and bidi handlers read the request stream themselves, so a message that did
 * not decode is caught where grpc-js pushes it into the stream: the call ends with the status,
 * and nothing after it reaches the handler.
 */
function guardStreamingRequests(handler: AnyHandler, domain: string) {
  return (stream: grpc.ServerDuplexStream<unknown, unknown>) => {
    const push = stream.push.bind(stream);
    let failed = false;
    stream.push = (chunk: unknown, encoding?: BufferEncoding) => {
      if (failed) return false;
      if (chunk instanceof Malformed) {
        failed = true;
        stream.emit("error", statusOf(malformedError(chunk), domain));
        return false;
      }
      return push(chunk, encoding);
    };
    (handler as (stream: unknown) => void)(stream);
  };
}
