// The real OpenTelemetry SDK as this test file's tracer, every span kept in its in-memory exporter
// for the tests to read; stopped after the file's last test.
import {
  AlwaysOnSampler,
  InMemorySpanExporter,
  NodeTracerProvider,
  SimpleSpanProcessor,
} from "@opentelemetry/sdk-trace-node";
import test from "ava";

/** Registers the tracer for this file; call once, at the top level. */
export function recordSpans(): InMemorySpanExporter {
  const finished = new InMemorySpanExporter();
  const provider = new NodeTracerProvider({
    sampler: new AlwaysOnSampler(),
    spanProcessors: [new SimpleSpanProcessor(finished)],
  });
  provider.register();
  test.after.always("stop the tracer provider", () => provider.shutdown());
  return finished;
}
