import type { MethodInfo, RpcKind } from "../contract.js";
import { Code } from "../errors.js";
import type { UnknownCall } from "../framing.js";
import type { Metrics } from "../metrics.js";
import type { ClientMiddleware, ServerMiddleware } from "./types.js";

// The names, labels and label values of go-grpc-prometheus, which existing gRPC dashboards and
// alerts read: grpc_code is the Go name of the status code ("OK", "NotFound", "Canceled"…).

/** grpc_code values, by status code number. */
export const GRPC_CODE_NAMES = [
  "OK",
  "Canceled",
  "Unknown",
  "InvalidArgument",
  "DeadlineExceeded",
  "NotFound",
  "AlreadyExists",
  "PermissionDenied",
  "ResourceExhausted",
  "FailedPrecondition",
  "Aborted",
  "OutOfRange",
  "Unimplemented",
  "Internal",
  "Unavailable",
  "DataLoss",
  "Unauthenticated",
] as const;

const GRPC_TYPES: Record<RpcKind, string> = {
  unary: "unary",
  server_streaming: "server_stream",
  client_streaming: "client_stream",
  bidi_streaming: "bidi_stream",
};

type Side = "server" | "client";
const LABELS = ["grpc_type", "grpc_service", "grpc_method"] as const;

/** The gRPC metrics of one side (served calls, or outgoing ones), registered once per registry. */
function rpcMetrics(metrics: Metrics, side: Side) {
  const who = side === "server" ? "served by this process" : "this process made";
  return metrics.shared(`grpc_${side}`, () => ({
    started: metrics.counter({
      name: `grpc_${side}_started_total`,
      help: `RPCs ${who} that started.`,
      labelNames: LABELS,
    }),
    handled: metrics.counter({
      name: `grpc_${side}_handled_total`,
      help: `RPCs ${who} that completed, by the status code the caller got.`,
      labelNames: [...LABELS, "grpc_code"],
    }),
    seconds: metrics.histogram({
      name: `grpc_${side}_handling_seconds`,
      help: `From the start of an RPC ${who} to its status, in seconds.`,
      labelNames: LABELS,
    }),
    received: metrics.counter({
      name: `grpc_${side}_msg_received_total`,
      help: `Messages received in RPCs ${who}.`,
      labelNames: LABELS,
    }),
    sent: metrics.counter({
      name: `grpc_${side}_msg_sent_total`,
      help: `Messages sent in RPCs ${who}.`,
      labelNames: LABELS,
    }),
  }));
}

/** Precomputed label sets of one rpc, every series present from the start at 0. */
function seriesOf(method: MethodInfo, m: ReturnType<typeof rpcMetrics>) {
  const labels = {
    grpc_type: GRPC_TYPES[method.kind],
    grpc_service: method.service,
    grpc_method: method.rpc,
  };
  const byCode = GRPC_CODE_NAMES.map((grpc_code) => ({ ...labels, grpc_code }));
  m.started.inc(labels, 0);
  m.received.inc(labels, 0);
  m.sent.inc(labels, 0);
  for (const code of byCode) m.handled.inc(code, 0);
  return { labels, byCode, streaming: method.kind === "server_streaming" };
}

async function* counting(messages: AsyncIterable<unknown>, count: () => void) {
  for await (const message of messages) {
    count();
    yield message;
  }
}

/**
 * Served calls as go-grpc-prometheus counts them: `grpc_server_started_total`,
 * `grpc_server_handled_total{grpc_code}` with the status the caller really got,
 * `grpc_server_handling_seconds`, and the messages received and sent.
 */
export function metricsServer(metrics: Metrics): ServerMiddleware {
  const m = rpcMetrics(metrics, "server");
  return {
    name: "metrics",
    wrap(method, next) {
      const { labels, byCode, streaming } = seriesOf(method, m);
      const sent = () => m.sent.inc(labels);
      return (request, ctx) => {
        m.started.inc(labels);
        m.received.inc(labels);
        ctx.onFinish((status) => {
          m.handled.inc(byCode[status.code] ?? (byCode[Code.UNKNOWN] as object));
          m.seconds.observe(labels, status.durationMs / 1000);
          if (!streaming && status.code === Code.OK) sent();
        });
        if (!streaming) return next(request, ctx);
        return Promise.resolve(next(request, ctx)).then((messages) =>
          counting(messages as AsyncIterable<unknown>, sent),
        );
      };
    },
  };
}

/**
 * Outgoing calls as go-grpc-prometheus counts them: `grpc_client_started_total`,
 * `grpc_client_handled_total{grpc_code}`, `grpc_client_handling_seconds`, messages sent and
 * received.
 */
export function metricsClient(metrics: Metrics): ClientMiddleware {
  const m = rpcMetrics(metrics, "client");
  return {
    name: "metrics",
    wrap(method, next) {
      const { labels, byCode, streaming } = seriesOf(method, m);
      const received = () => m.received.inc(labels);
      return (request, call) => {
        m.started.inc(labels);
        m.sent.inc(labels);
        call.onFinish((status) => {
          m.handled.inc(byCode[status.code] ?? (byCode[Code.UNKNOWN] as object));
          m.seconds.observe(labels, status.durationMs / 1000);
          if (!streaming && status.code === Code.OK) received();
        });
        const result = next(request, call);
        return streaming ? counting(result as AsyncIterable<unknown>, received) : result;
      };
    },
  };
}

/**
 * `shop_grpc_server_unknown_method_total{grpc_service}`: calls of a method this server does not
 * serve, by the served proto service they name, or "other"; at 0 from the start for `served` and
 * "other". The method is in the log line only: a caller chooses it, and a label per name would
 * grow without bound.
 */
export function unknownMethods(
  metrics: Metrics,
  served: readonly string[],
): (call: UnknownCall) => void {
  const calls = metrics.counter({
    name: "shop_grpc_server_unknown_method_total",
    help: "Calls of a method this server does not serve (UNIMPLEMENTED), by the served service they name, or other.",
    labelNames: ["grpc_service"],
  });
  for (const service of [...served, "other"]) calls.inc({ grpc_service: service }, 0);
  return (call) => calls.inc({ grpc_service: call.service ?? "other" });
}
