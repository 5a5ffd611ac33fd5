// Envoy samples new traces as the services do: a caller's traceparent decides, and the default
// share (10 %) of the calls that bring none start a sampled trace at the edge. Its span is named
// after the rpc. A real Envoy in
// `npm run mesh`, its spans received over OTLP/gRPC.
import { randomBytes, randomUUID } from "node:crypto";
import test from "ava";
import { edgeFetch } from "../helpers/credentials.js";
import { eventually } from "../helpers/eventually.js";
import { MeshUnderTest, tag, withId } from "../helpers/front-door.js";
import { startLaunch } from "../helpers/launch.js";
import { type OtlpReceiver, startOtlpReceiver } from "../helpers/otlp.js";

const mesh = new MeshUnderTest();
let receiver: OtlpReceiver;

test.before(async () => {
  receiver = await startOtlpReceiver();
  mesh.launched = await startLaunch("mesh", {
    replicas: 1,
    args: ["--no-seed"],
    env: {
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint,
      OTEL_EXPORTER_OTLP_PROTOCOL: "grpc",
      OTEL_BSP_SCHEDULE_DELAY: "200",
    },
  });
});

test.after.always(async () => {
  await mesh.stop();
  await receiver?.stop();
});

const edgeSpans = () => receiver.spans().filter((span) => span.service === "envoy");

test.serial("the edge samples a tenth of new traces, and keeps a caller's decision", async (t) => {
  const { products } = mesh.clients();
  t.teardown(() => products.close());
  const get = (metadata: Record<string, string>) => {
    const options = withId(metadata["x-request-id"] ?? tag("call"));
    for (const [key, value] of Object.entries(metadata)) options.metadata?.set(key, value);
    return products.getProduct({ productId: "prd_none" }, options).catch(() => undefined);
  };
  const traceparent = (flags: string) => {
    const traceId = randomBytes(16).toString("hex");
    return { traceId, header: `00-${traceId}-${randomBytes(8).toString("hex")}-${flags}` };
  };

  const unsampled = Array.from({ length: 20 }, () => traceparent("00"));
  const sampled = Array.from({ length: 20 }, () => traceparent("01"));
  const fresh = tag("new");
  for (const { header } of unsampled) await get({ traceparent: header });
  for (let i = 0; i < 200; i++) await get({ "x-request-id": `${fresh}-${i}` });
  for (const { header } of sampled) await get({ traceparent: header });

  const traced = (ids: { traceId: string }[]) =>
    ids.filter(({ traceId }) => edgeSpans().some((span) => span.traceId === traceId)).length;
  // Envoy exports its spans in the order they end: once the last calls' are in, so is the rest.
  await eventually("a span for every call whose caller sampled it", () =>
    traced(sampled) === sampled.length ? true : undefined,
  );
  t.is(traced(unsampled), 0, "a caller's unsampled trace stays unsampled");
  // Named after the rpc, as the service's span of the call is.
  const edge = edgeSpans().find((span) => span.traceId === sampled[0]?.traceId);
  t.is(edge?.name, "shop.product.v1.ProductService/GetProduct");
  const started = new Set(
    edgeSpans()
      .filter((span) =>
        span.attributes?.some(
          (a) =>
            a.key === "guid:x-request-id" && String(a.value.stringValue).startsWith(`${fresh}-`),
        ),
      )
      .map((span) => span.traceId),
  ).size;
  // 200 draws at 10 %: 20 expected; every one sampled (or none) is what this guards against.
  t.true(started > 0 && started < 60, `${started} of 200 new traces sampled`);
});

test.serial(
  "the edge span of a REST call names its URL without the caller's query, as the access log does",
  async (t) => {
    // One the transcoder serves, and one the edge refuses before it (an unknown parameter).
    for (const query of ["page_size=2&in_stock_only=true", "page_size=2&caller_data=ada%40x.com"]) {
      const traceId = randomBytes(16).toString("hex");
      const reply = await edgeFetch(`https://${mesh.front()}/products?${query}`, {
        headers: { traceparent: `00-${traceId}-${randomBytes(8).toString("hex")}-01` },
      });
      await reply.text();
      const span = await eventually("the edge span", () =>
        edgeSpans().find((edge) => edge.traceId === traceId),
      );
      const url = String(span.attributes?.find((a) => a.key === "http.url")?.value.stringValue);
      t.regex(url, /^https:\/\/[^/]+\/products$/, `${reply.status} ${query}`);
    }
  },
);

test.serial("Envoy's access log line carries its call's trace_id, sampled or not", async (t) => {
  const { products } = mesh.clients();
  t.teardown(() => products.close());
  const prefix = tag("traced");
  const calls = ["01", "00"].map((flags, i) => ({
    id: `${prefix}-${i}`,
    traceId: randomBytes(16).toString("hex"),
    flags,
  }));
  for (const { id, traceId, flags } of calls) {
    const options = withId(id);
    options.metadata?.set(
      "traceparent",
      `00-${traceId}-${randomBytes(8).toString("hex")}-${flags}`,
    );
    await products.getProduct({ productId: "prd_none" }, options).catch(() => undefined);
  }
  const lines = await mesh.loggedRequests(prefix, calls.length);
  for (const { id, traceId } of calls) {
    const line = lines.find((logged) => logged.x_request_id === id);
    t.is(line?.trace_id, traceId, id);
  }
});

test.serial(
  "a caller's x-request-id of a UUID's length passes the edge unchanged, traced or not",
  async (t) => {
    const { products } = mesh.clients();
    t.teardown(() => products.close());
    // Envoy's default writes a trace decision into a UUID-long id's 15th character.
    const calls = ["01", "00", ""].flatMap((flags) => [
      { id: randomUUID(), flags },
      // Any 36 characters: Envoy's default takes them for a UUID too.
      { id: `${tag("id36")}-`.padEnd(36, "x"), flags },
    ]);
    for (const { id, flags } of calls) {
      const options = withId(id);
      if (flags) {
        const traceparent = `00-${randomBytes(16).toString("hex")}-${randomBytes(8).toString("hex")}-${flags}`;
        options.metadata?.set("traceparent", traceparent);
      }
      await products.getProduct({ productId: "prd_none" }, options).catch(() => undefined);
    }
    for (const { id, flags } of calls) {
      const [line] = await mesh.loggedRequests(id, 1);
      t.is(line?.x_request_id, id, `traceparent flags "${flags}"`);
    }
  },
);
