import type { Metadata } from "@grpc/grpc-js";
import {
  type Context,
  context,
  isSpanContextValid,
  propagation,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  type TextMapGetter,
  type TextMapSetter,
  trace,
} from "@opentelemetry/api";
import { type CallContext, type CallStatus, contextKey } from "../context.js";
import type { MethodInfo } from "../contract.js";
import { Code, SERVER_FAULTS } from "../errors.js";
import { spanStart, tracer, unsampledParent } from "../observability/tracing.js";
import { GRPC_CODE_NAMES } from "./metrics.js";
import type { ClientMiddleware, ServerMiddleware } from "./types.js";

/** The trace context of a served call, for work that leaves the call's async context. */
export const TRACE_CONTEXT = contextKey<Context>("trace context");

const getter: TextMapGetter<Metadata> = {
  keys: (metadata) => Object.keys(metadata.getMap()),
  get: (metadata, key) => {
    const [value] = metadata.get(key);
    return typeof value === "string" ? value : undefined;
  },
};

const setter: TextMapSetter<Metadata> = {
  set: (metadata, key, value) => metadata.set(key, value),
};

function spanOptions(method: MethodInfo, kind: SpanKind) {
  return {
    kind,
    attributes: { "rpc.system": "grpc", "rpc.service": method.service, "rpc.method": method.rpc },
  };
}

function finish(span: Span, status: CallStatus, error: boolean) {
  span.setAttribute("rpc.grpc.status_code", status.code);
  if (error) {
    span.setStatus({
      code: SpanStatusCode.ERROR,
      message: `${GRPC_CODE_NAMES[status.code] ?? status.code}: ${status.details}`,
    });
  }
  span.end(spanStart());
}

/** Each message of `messages` is made inside `active`, where the handler's spans belong. */
function within(active: Context, messages: AsyncIterable<unknown>): AsyncIterable<unknown> {
  return {
    [Symbol.asyncIterator]() {
      const iterator = messages[Symbol.asyncIterator]();
      return {
        next: () => context.with(active, () => iterator.next()),
        return: (value?: unknown) =>
          context.with(
            active,
            () => iterator.return?.(value) ?? Promise.resolve({ done: true, value }),
          ),
      } as AsyncIterator<unknown>;
    },
  };
}

/**
 * A span per served call, continuing the caller's W3C trace context (`traceparent`): the handler
 * runs inside it, so its own spans and outgoing calls are its children. Its trace id and span id
 * go into every log line of the call.
 */
export const tracingServer: ServerMiddleware = {
  name: "tracing",
  wrap(method, next) {
    const name = `${method.service}/${method.rpc}`;
    const options = spanOptions(method, SpanKind.SERVER);
    const streaming = method.kind === "server_streaming";
    return (request, ctx) => {
      const parent = propagation.extract(ROOT_CONTEXT, ctx.metadata, getter);
      const span = tracer().startSpan(name, { ...options, startTime: spanStart() }, parent);
      const spanContext = span.spanContext();
      if (isSpanContextValid(spanContext)) {
        ctx.logFields.trace_id = spanContext.traceId;
        ctx.logFields.span_id = spanContext.spanId;
      }
      ctx.onFinish((status) => finish(span, status, SERVER_FAULTS.has(status.code)));
      const active = trace.setSpan(parent, span);
      ctx.set(TRACE_CONTEXT, active);
      const result = context.with(active, () => next(request, ctx));
      if (!streaming) return result;
      return Promise.resolve(result).then((messages) =>
        within(active, messages as AsyncIterable<unknown>),
      );
    };
  },
};

/** The trace context an outgoing call belongs to: the active one, else its served call's. */
function parentOf(ctx: CallContext | undefined): Context {
  const active = context.active();
  if (trace.getSpan(active) !== undefined || !ctx) return active;
  return ctx.get(TRACE_CONTEXT) ?? active;
}

/**
 * A span per outgoing call, a child of the active span (a saga step, or the served call), and
 * its W3C trace context (`traceparent`) in the call's metadata, so the callee continues it.
 * Under a parent no child of which is recorded, the call carries the parent's trace context and
 * makes no span.
 */
export const tracingClient: ClientMiddleware = {
  name: "tracing",
  wrap(method, next) {
    const name = `${method.service}/${method.rpc}`;
    const options = spanOptions(method, SpanKind.CLIENT);
    return (request, call) => {
      const parent = parentOf(call.options.ctx);
      if (unsampledParent(parent)) {
        propagation.inject(parent, call.metadata, setter);
        return next(request, call);
      }
      const span = tracer().startSpan(name, { ...options, startTime: spanStart() }, parent);
      propagation.inject(trace.setSpan(parent, span), call.metadata, setter);
      call.onFinish((status) => finish(span, status, status.code !== Code.OK));
      return next(request, call);
    };
  },
};
