// OpenTelemetry settings a service refuses at start, rather than running without the traces its
// operator asked for.
import test from "ava";
import { startTracing } from "../../kit/observability/tracing.js";

test("an OTEL_TRACES_EXPORTER the kit has no exporter for stops the start, naming it", async (t) => {
  await t.throwsAsync(
    startTracing("user", {
      OTEL_TRACES_EXPORTER: "zipkin",
      OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318",
    }),
    { message: /OTEL_TRACES_EXPORTER=zipkin is not supported/ },
  );
});
