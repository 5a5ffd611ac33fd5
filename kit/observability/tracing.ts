// OpenTelemetry for a service process: the SDK configured by the standard OTEL_* variables, the
// tracer the kit's spans come from, and the W3C trace context of the call being served.
// README "Operate" documents the variables and their defaults.
import {
  type Context,
  context,
  isSpanContextValid,
  type Span,
  SpanStatusCode,
  TraceFlags,
  trace,
} from "@opentelemetry/api";
import { detectResources, envDetector, resourceFromAttributes } from "@opentelemetry/resources";
import {
  AlwaysOffSampler,
  BatchSpanProcessor,
  ConsoleSpanExporter,
  NodeTracerProvider,
  ParentBasedSampler,
  type SpanExporter,
  TraceIdRatioBasedSampler,
} from "@opentelemetry/sdk-trace-node";

/** Where every span of the kit and the services comes from. */
export const tracer = () => trace.getTracer("shopmesh");

/**
 * Now, in ms since the epoch to the microsecond, for a span's start, end and events: the SDK's
 * own is Date.now(), a whole millisecond, so a child could seem to start before its parent or
 * end after it. A span given its start must be given its end too.
 */
export const spanStart = () => performance.timeOrigin + performance.now();

/**
 * The share of traces recorded when tracing exports and OTEL_TRACES_SAMPLER is unset: the root
 * of a trace (Envoy for edge traffic, else the first service) samples this share, and every hop
 * after it follows the root's decision (parent-based). Chosen from the benchmark's cost of
 * tracing (`npm run bench -- --observability`; README "Operate").
 */
export const DEFAULT_SAMPLE_RATIO = 0.1;

type Env = Record<string, string | undefined>;

const set = (value: string | undefined) => value !== undefined && value.trim() !== "";

/** True when OTEL_SDK_DISABLED turns OpenTelemetry off altogether. */
export const tracingDisabled = (env: Env = process.env) =>
  env.OTEL_SDK_DISABLED?.trim().toLowerCase() === "true";

/**
 * True when spans are exported: an OTLP endpoint is set (OTEL_EXPORTER_OTLP_ENDPOINT or
 * OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), or OTEL_TRACES_EXPORTER names an exporter.
 */
export function tracesExported(env: Env = process.env): boolean {
  if (tracingDisabled(env)) return false;
  const exporter = env.OTEL_TRACES_EXPORTER?.trim();
  if (exporter === "none") return false;
  return (
    set(exporter) ||
    set(env.OTEL_EXPORTER_OTLP_ENDPOINT) ||
    set(env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
  );
}

/**
 * The share of new traces recorded, 0 to 1, as the process samples them: OTEL_TRACES_SAMPLER and
 * OTEL_TRACES_SAMPLER_ARG when set, else DEFAULT_SAMPLE_RATIO while exporting and 0 otherwise.
 * Envoy's edge samples the same share (deploy/envoy/observability.ts).
 */
export function sampleRatio(env: Env = process.env): number {
  if (!tracesExported(env)) return 0;
  const sampler = env.OTEL_TRACES_SAMPLER?.trim();
  if (!set(sampler)) return DEFAULT_SAMPLE_RATIO;
  if (sampler === "always_on" || sampler === "parentbased_always_on") return 1;
  if (sampler === "always_off" || sampler === "parentbased_always_off") return 0;
  const arg = Number(env.OTEL_TRACES_SAMPLER_ARG);
  return set(env.OTEL_TRACES_SAMPLER_ARG) && arg >= 0 && arg <= 1 ? arg : 1;
}

/** How traces travel over OTLP: OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, else OTEL_EXPORTER_OTLP_PROTOCOL. */
export type OtlpProtocol = "grpc" | "http/protobuf" | "http/json";

const PROTOCOLS: readonly OtlpProtocol[] = ["grpc", "http/protobuf", "http/json"];

function otlpProtocol(env: Env): OtlpProtocol {
  const variable = set(env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL)
    ? "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
    : "OTEL_EXPORTER_OTLP_PROTOCOL";
  const protocol = env[variable]?.trim();
  if (!set(protocol)) return "http/protobuf";
  if (!PROTOCOLS.includes(protocol as OtlpProtocol)) {
    throw new Error(
      `${variable}: the OTLP protocol must be one of ${PROTOCOLS.join(", ")}, got "${protocol}"`,
    );
  }
  return protocol as OtlpProtocol;
}

/** The OTLP endpoint traces go to, and over which protocol, as the OTEL_* variables set them. */
export function otlpEndpoint(
  env: Env = process.env,
): { url: string; protocol: OtlpProtocol } | undefined {
  if (!tracesExported(env)) return undefined;
  const protocol = otlpProtocol(env);
  const traces = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT?.trim();
  const base = env.OTEL_EXPORTER_OTLP_ENDPOINT?.trim();
  if (traces) return { url: traces, protocol };
  if (base) {
    return { url: protocol === "grpc" ? base : `${base.replace(/\/$/, "")}/v1/traces`, protocol };
  }
  return {
    url: protocol === "grpc" ? "http://localhost:4317" : "http://localhost:4318/v1/traces",
    protocol,
  };
}

export interface Tracing {
  /** False when OTEL_SDK_DISABLED turned OpenTelemetry off: no ids, no propagation. */
  readonly enabled: boolean;
  /** True when spans are sampled and exported. */
  readonly exporting: boolean;
  /** Exports what is still buffered, then stops. */
  shutdown(): Promise<void>;
}

let started: Promise<Tracing> | undefined;

/**
 * True when the sampler gives a span the decision of its parent, or samples nothing: the kit's
 * default and every `parentbased_*` OTEL_TRACES_SAMPLER. A span under a parent that is not
 * sampled then records nothing, so unsampledParent() lets the kit skip making it.
 */
let childrenFollowParent = false;

const followsParent = (sampler: string | undefined) =>
  !set(sampler) || sampler?.trim().startsWith("parentbased_") || sampler?.trim() === "always_off";

/**
 * The span of `active` when no span made under it would be recorded: it is not sampled, not
 * recording, and the sampler follows the parent. Nine in ten calls at the default sampling,
 * and every call when nothing is exported.
 */
export function unsampledParent(active: Context = context.active()): Span | undefined {
  if (!childrenFollowParent) return undefined;
  const span = trace.getSpan(active);
  if (!span || span.isRecording()) return undefined;
  const spanContext = span.spanContext();
  if (!isSpanContextValid(spanContext)) return undefined;
  return (spanContext.traceFlags & TraceFlags.SAMPLED) === 0 ? span : undefined;
}

/**
 * Starts OpenTelemetry for this process (once; later calls return the first), configured by the
 * standard OTEL_* variables. Without an exporter, every call still gets a trace id and span id
 * (for its log lines, and passed on in `traceparent`), but no span is recorded. With one, new
 * traces are sampled at DEFAULT_SAMPLE_RATIO unless OTEL_TRACES_SAMPLER says otherwise, and
 * spans go out over OTLP in batches. OTEL_SERVICE_NAME defaults to `service`.
 *
 * Only the tracer provider is loaded; an exporter's code is imported when one is configured, so
 * a process that exports nothing does not carry it (README "Deploy" has the memory this saves).
 */
export function startTracing(service: string, env: Env = process.env): Promise<Tracing> {
  started ??= start(service, env);
  return started;
}

async function start(service: string, env: Env): Promise<Tracing> {
  if (tracingDisabled(env)) return { enabled: false, exporting: false, shutdown: async () => {} };
  // Refused at start whether or not anything is exported yet, as the other settings are.
  otlpProtocol(env);
  const exporting = tracesExported(env);
  const provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ "service.name": service }).merge(
      // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over the default name.
      detectResources({ detectors: [envDetector] }),
    ),
    // When OTEL_TRACES_SAMPLER is set, the provider reads it and OTEL_TRACES_SAMPLER_ARG itself.
    ...(!set(env.OTEL_TRACES_SAMPLER) && {
      sampler: new ParentBasedSampler({
        root: exporting
          ? new TraceIdRatioBasedSampler(DEFAULT_SAMPLE_RATIO)
          : new AlwaysOffSampler(),
      }),
    }),
    // Without an exporter the provider still makes ids; a span that a sampled parent makes
    // recorded goes nowhere.
    spanProcessors: exporting ? [new BatchSpanProcessor(await spanExporter(env))] : [],
  });
  // The W3C trace context propagator and an AsyncLocalStorage context manager.
  provider.register();
  childrenFollowParent = followsParent(env.OTEL_TRACES_SAMPLER);
  return { enabled: true, exporting, shutdown: () => provider.shutdown() };
}

/** The exporter OTEL_TRACES_EXPORTER and the OTLP protocol name; it reads its endpoint itself. */
async function spanExporter(env: Env): Promise<SpanExporter> {
  const exporter = env.OTEL_TRACES_EXPORTER?.trim() || "otlp";
  if (exporter === "console") return new ConsoleSpanExporter();
  if (exporter !== "otlp") {
    throw new Error(`OTEL_TRACES_EXPORTER=${exporter} is not supported: use otlp, console or none`);
  }
  switch (otlpProtocol(env)) {
    case "grpc":
      return new (exporterOf(await import("@opentelemetry/exporter-trace-otlp-grpc")))();
    case "http/json":
      return new (exporterOf(await import("@opentelemetry/exporter-trace-otlp-http")))();
    case "http/protobuf":
      return new (exporterOf(await import("@opentelemetry/exporter-trace-otlp-proto")))();
  }
}

type ExporterModule = { OTLPTraceExporter: new () => SpanExporter };

/**
 * An OTLP exporter package's class. They are CommonJS: Node's import() and tsx name their
 * exports, but the bundle's chunks (npm run build, what the image runs) only have `default`.
 */
const exporterOf = (module: Partial<ExporterModule> & { default?: ExporterModule }) =>
  (module.OTLPTraceExporter ??
    module.default?.OTLPTraceExporter) as ExporterModule["OTLPTraceExporter"];

/** The trace id and span id of the active span, for a log line; {} when there is none. */
export function traceFields(active: Context = context.active()): Record<string, string> {
  const spanContext = trace.getSpanContext(active);
  if (!spanContext || !isSpanContextValid(spanContext)) return {};
  return { trace_id: spanContext.traceId, span_id: spanContext.spanId };
}

/** Ends a span with an error status and the exception, or OK. */
export function endSpan(span: Span, error?: unknown): void {
  if (error !== undefined) {
    span.recordException(error instanceof Error ? error : String(error), spanStart());
    span.setStatus({
      code: SpanStatusCode.ERROR,
      message: error instanceof Error ? error.message : String(error),
    });
  }
  span.end(spanStart());
}

/**
 * Runs `work` in a span of its own, a child of the active one: a step of a saga, a background
 * run, a transaction. Spans started inside it (outgoing calls, transactions) are its children.
 * Under a parent no child of which is recorded, `work` runs in the parent's span instead, which
 * records nothing either: the span would cost its ids, objects and context for nothing. A
 * rejection is an error of the span when `failed` says so.
 */
export function inSpan<T>(
  name: string,
  work: (span: Span) => Promise<T>,
  attributes?: Record<string, string | number | boolean>,
  failed: (error: unknown) => boolean = () => true,
): Promise<T> {
  const parent = unsampledParent();
  if (parent) return work(parent);
  return tracer().startActiveSpan(name, { attributes, startTime: spanStart() }, (span) =>
    work(span).then(
      (result) => {
        endSpan(span);
        return result;
      },
      (error: unknown) => {
        endSpan(span, failed(error) ? error : undefined);
        throw error;
      },
    ),
  );
}
