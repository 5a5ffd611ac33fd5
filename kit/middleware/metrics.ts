import type { MethodInfo, RpcKind } from "../contract.js";
import { Code } from "../errors.js";
import type { Metrics } from "../observability/metrics.js";
import { Malformed } from "../transport/decode.js";
import type { UnknownCall } from "../transport/framing.js";
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

/** One counter series, counted in a plain number on the call path. */
interface Tally {
  count: number;
}

/**
 * A counter whose series are tallied in plain numbers and added to it when it is read (its
 * prom-client collect hook): prom-client builds and checks a label key for every inc, and a
 * served call made four of them.
 */
function talliedCounter(metrics: Metrics, name: string, help: string, labelNames: string[]) {
  const series: { labels: Record<string, string>; tally: Tally }[] = [];
  const counter = metrics.counter({
    name,
    help,
    labelNames,
    collect() {
      for (const { labels, tally } of series) {
        if (tally.count === 0) continue;
        this.inc(labels, tally.count);
        tally.count = 0;
      }
    },
  });
  return {
    /** The tally of one series, present from the start at 0. */
    tally(labels: Record<string, string>): Tally {
      const tally = { count: 0 };
      series.push({ labels, tally });
      counter.inc(labels, 0);
      return tally;
    },
  };
}

/** The gRPC metrics of one side (served calls, or outgoing ones), registered once per registry. */
function rpcMetrics(metrics: Metrics, side: Side) {
  const who = side === "server" ? "served by this process" : "this process made";
  const labelNames = [...LABELS];
  return metrics.shared(`grpc_${side}`, () => ({
    started: talliedCounter(
      metrics,
      `grpc_${side}_started_total`,
      `RPCs ${who} that started.`,
      labelNames,
    ),
    handled: talliedCounter(
      metrics,
      `grpc_${side}_handled_total`,
      `RPCs ${who} that completed, by the status code the caller got.`,
      [...labelNames, "grpc_code"],
    ),
    seconds: metrics.histogram({
      name: `grpc_${side}_handling_seconds`,
      help: `From the start of an RPC ${who} to its status, in seconds.`,
      labelNames: LABELS,
    }),
    received: talliedCounter(
      metrics,
      `grpc_${side}_msg_received_total`,
      `Messages received in RPCs ${who}.`,
      labelNames,
    ),
    sent: talliedCounter(
      metrics,
      `grpc_${side}_msg_sent_total`,
      `Messages sent in RPCs ${who}.`,
      labelNames,
    ),
  }));
}

/** The series of one rpc, every one present from the start at 0. */
function seriesOf(method: MethodInfo, m: ReturnType<typeof rpcMetrics>) {
  const labels = {
    grpc_type: GRPC_TYPES[method.kind],
    grpc_service: method.service,
    grpc_method: method.rpc,
  };
  return {
    labels,
    started: m.started.tally(labels),
    received: m.received.tally(labels),
    sent: m.sent.tally(labels),
    byCode: GRPC_CODE_NAMES.map((grpc_code) => m.handled.tally({ ...labels, grpc_code })),
    streaming: method.kind === "server_streaming",
  };
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
      const series = seriesOf(method, m);
      const { labels, streaming } = series;
      const sent = () => series.sent.count++;
      return (request, ctx) => {
        series.started.count++;
        series.received.count += request instanceof Malformed ? request.messages : 1;
        ctx.onFinish((status) => {
          (series.byCode[status.code] ?? (series.byCode[Code.UNKNOWN] as Tally)).count++;
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
      const series = seriesOf(method, m);
      const { labels, streaming } = series;
      const received = () => series.received.count++;
      return (request, call) => {
        series.started.count++;
        series.sent.count++;
        call.onFinish((status) => {
          (series.byCode[status.code] ?? (series.byCode[Code.UNKNOWN] as Tally)).count++;
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
 * "other", and for health and reflection from their first such call. The method is in the log line only: a caller chooses it, and a label per name would
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
