import { randomUUID } from "node:crypto";
import { Metadata } from "@grpc/grpc-js";
import { type CallContext, type CallOptions, contextKey } from "../context.js";
import type { ClientMiddleware, ServerMiddleware } from "./types.js";

const HEADER = "x-request-id";

/** What of a caller's id is kept: Envoy's access log keeps as much (deploy/envoy/access-log.ts). */
export const X_REQUEST_ID_MAX_LENGTH = 128;

/**
 * The x-request-id of a call: the id that ties together the log lines of one request across
 * Envoy and the services. Not the proto's `request_id`, which is an idempotency key.
 */
export const X_REQUEST_ID = contextKey<string>(HEADER);

/** The caller's x-request-id in `metadata` (its first 128 characters), or a new one. */
export function xRequestIdOf(metadata: Metadata): string {
  const given = metadata.get(HEADER)[0];
  return typeof given === "string" && given !== ""
    ? given.slice(0, X_REQUEST_ID_MAX_LENGTH)
    : randomUUID();
}

/** Puts the call's x-request-id (xRequestIdOf) in every log line of the call. */
export const xRequestIdServer: ServerMiddleware = {
  name: "x-request-id",
  wrap: (_method, next) => (request, ctx) => {
    const id = xRequestIdOf(ctx.metadata);
    ctx.set(X_REQUEST_ID, id);
    ctx.logFields.x_request_id = id;
    return next(request, ctx);
  },
};

/** A call made while serving another carries that call's x-request-id, unless it set its own. */
export const xRequestIdClient: ClientMiddleware = {
  name: "x-request-id",
  wrap: (_method, next) => (request, call) => {
    const id = call.options.ctx?.get(X_REQUEST_ID);
    if (id !== undefined && call.metadata.get(HEADER).length === 0) call.metadata.set(HEADER, id);
    return next(request, call);
  },
};

/**
 * Options for a call made on behalf of `ctx` that must outlive it (a compensation, which goes on
 * after its caller has gone): the served call's x-request-id, not its deadline or cancellation.
 */
export function outliving(ctx: CallContext): CallOptions {
  const id = ctx.get(X_REQUEST_ID);
  if (id === undefined) return {};
  const metadata = new Metadata();
  metadata.set(HEADER, id);
  return { metadata };
}
