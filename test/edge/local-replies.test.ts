// Envoy's own answers that are not refusals, in each protocol's form with the edge's ErrorInfo, as
// its refusals are: UNAVAILABLE when no replica can take a call (an Envoy whose clusters have no
// hosts at all), UNIMPLEMENTED for a path with no route, and RESOURCE_EXHAUSTED for headers too
// large for HTTP/1.1.
import { once } from "node:events";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { Client, type ServiceError as GrpcError, Metadata } from "@grpc/grpc-js";
import test from "ava";
import { ErrorInfo } from "../../gen/ts/google/rpc/error_details.js";
import { GetProductRequest, ProductServiceService } from "../../gen/ts/shop/product/v1/product.js";
import { createClient } from "../../kit/client/index.js";
import { Code, decodeStatus, type ServiceError } from "../../kit/errors.js";
import { ADMIN_TOKEN, CERTS, edgeFetch, edgeTransport, tokenFor } from "../helpers/credentials.js";
import { type EnvoyHandle, startEnvoy } from "../helpers/envoy.js";
import { until } from "../helpers/eventually.js";
import { grpcFrame } from "../helpers/grpc-frame.js";

const expected = { reason: "UNAVAILABLE", domain: "shopmesh.edge" };

/**
 * What every door of getProductAtEveryDoor answers for an UNAVAILABLE with `info` (its ErrorInfo):
 * in each protocol's form, REST as `rest` says.
 */
const unavailableAtEveryDoor = (info: { reason: string; domain: string }, rest: DoorAnswer) => {
  const unavailable = { code: Code.UNAVAILABLE, ...info };
  const connect = { code: "unavailable", ...info };
  return {
    grpc: unavailable,
    grpcWeb: { http: 200, ...unavailable },
    connect: { http: 503, ...connect },
    connectStream: { http: 200, ...connect },
    rest,
  };
};

/** The code and ErrorInfo of a trailers-only gRPC-Web reply. */
function trailersOnly(response: Response) {
  const metadata = new Metadata();
  const details = response.headers.get("grpc-status-details-bin") ?? "";
  metadata.set("grpc-status-details-bin", Buffer.from(details, "base64"));
  const { reason, domain } = decodeStatus(metadata);
  return {
    http: response.status,
    code: Number(response.headers.get("grpc-status")),
    reason,
    domain,
  };
}

/** An answer's HTTP status (gRPC: none), gRPC code and ErrorInfo. */
interface DoorAnswer {
  http?: number;
  code: number | string;
  reason?: string;
  domain?: string;
}

/** The ErrorInfo of a Connect error's first detail. */
const connectInfo = (error: { details?: { value: string }[] } | undefined) => {
  const { reason, domain } = ErrorInfo.decode(
    Buffer.from(error?.details?.[0]?.value ?? "", "base64"),
  );
  return { reason, domain };
};

/** GetProduct of an unknown product through every door of `envoy`: what each answered. */
async function getProductAtEveryDoor(envoy: EnvoyHandle): Promise<Record<string, DoorAnswer>> {
  const request = GetProductRequest.encode({ productId: "prd_any" }).finish();
  const url = `https://${envoy.address}/shop.product.v1.ProductService/GetProduct`;
  const products = createClient(ProductServiceService, envoy.address, {
    transport: edgeTransport(),
    readyWaitMs: 0,
  });
  const grpc: DoorAnswer = await products
    .getProduct({ productId: "prd_any" })
    .then(
      () => ({ code: Code.OK }),
      (error: ServiceError) => {
        const { reason, domain } = error.details as { reason?: string; domain?: string };
        return { code: error.code, reason, domain };
      },
    )
    .finally(() => products.close());

  // gRPC-Web: a trailers-only 200, as its client reads the details only from one.
  const web = await edgeFetch(url, {
    method: "POST",
    headers: { "content-type": "application/grpc-web+proto" },
    body: grpcFrame(request),
  });

  // Connect: its error JSON, not Envoy's text; a stream's is its end-of-stream message.
  const connect = async (streaming: boolean) => {
    const response = await edgeFetch(url, {
      method: "POST",
      headers: {
        "content-type": streaming ? "application/connect+proto" : "application/proto",
        "connect-protocol-version": "1",
      },
      body: streaming ? grpcFrame(request) : Buffer.from(request),
    });
    const body = Buffer.from(await response.arrayBuffer());
    const json = JSON.parse(String(streaming ? body.subarray(5) : body));
    const error = streaming ? json.error : json;
    return { http: response.status, code: String(error?.code), ...connectInfo(error) };
  };

  const rest = await edgeFetch(`https://${envoy.address}/products/prd_any`);
  const status = (await rest.json()) as { code: number; details: DoorAnswer[] };
  return {
    grpc,
    grpcWeb: trailersOnly(web),
    connect: await connect(false),
    connectStream: await connect(true),
    rest: { http: rest.status, code: status.code, ...status.details[0] },
  };
}

test("with no replica to take a call, every door answers UNAVAILABLE with the edge's ErrorInfo", async (t) => {
  const envoy = await startEnvoy({ services: {}, tls: CERTS, waitHealthy: false });
  t.teardown(() => envoy.stop());
  t.like(
    await getProductAtEveryDoor(envoy),
    unavailableAtEveryDoor(expected, { http: 503, code: Code.UNAVAILABLE, reason: "UNAVAILABLE" }),
  );

  // Headers too large for HTTP/1.1's codec: its 431 in the same form, not Envoy's text.
  const huge = await edgeFetch(`https://${envoy.address}/products/prd_any`, {
    headers: { "x-padding": "x".repeat(100 * 1024) },
  });
  t.is(huge.status, 431);
  t.like(await huge.json(), {
    code: Code.RESOURCE_EXHAUSTED,
    details: [{ reason: "REQUEST_TOO_LARGE", domain: "shopmesh.edge" }],
  });
});

test("an Envoy short of heap refuses every door UNAVAILABLE EDGE_OVERLOADED, each in its form", async (t) => {
  // A budget below what an idle Envoy holds: it refuses every request, before any filter runs.
  const envoy = await startEnvoy({ services: {}, tls: CERTS, waitHealthy: false, heapMiB: 4 });
  t.teardown(() => envoy.stop());
  await until(
    "Envoy to refuse requests",
    async () =>
      (await envoy.counter("overload.envoy.overload_actions.stop_accepting_requests.active")) === 1,
  );
  const overloaded = { reason: "EDGE_OVERLOADED", domain: "shopmesh.edge" };
  t.like(
    await getProductAtEveryDoor(envoy),
    unavailableAtEveryDoor(overloaded, { http: 503, code: Code.UNAVAILABLE, ...overloaded }),
  );
});

// Envoy's own answer was a 400 without a body: INTERNAL to a gRPC client, without details.
test("a path Envoy will not normalize is UNIMPLEMENTED with its details over gRPC and gRPC-Web, and a REST 400 that says why", async (t) => {
  const envoy = await startEnvoy({ services: {}, tls: CERTS, waitHealthy: false });
  t.teardown(() => envoy.stop());
  const path = "/shop.product.v1.ProductService/Get%00Product";
  const { credentials, options } = edgeTransport();
  const client = new Client(envoy.address, credentials, options);
  t.teardown(() => client.close());
  const same = (bytes: Buffer) => bytes;
  const error = await new Promise<GrpcError | null>((resolve) =>
    client.makeUnaryRequest(path, same, same, Buffer.alloc(0), (failure) => resolve(failure)),
  );
  t.is(error?.code, Code.UNIMPLEMENTED, error?.details);
  t.like(decodeStatus(error?.metadata ?? new Metadata()), {
    reason: "UNKNOWN_METHOD",
    domain: "shopmesh.edge",
  });

  const web = await edgeFetch(`https://${envoy.address}${path}`, {
    method: "POST",
    headers: { "content-type": "application/grpc-web+proto" },
    body: grpcFrame(Buffer.alloc(0)),
  });
  t.deepEqual(trailersOnly(web), {
    http: 200,
    code: Code.UNIMPLEMENTED,
    reason: "UNKNOWN_METHOD",
    domain: "shopmesh.edge",
  });

  const rest = await edgeFetch(`https://${envoy.address}/products/a%00b`);
  t.is(rest.status, 400);
  t.like(await rest.json(), {
    code: Code.INVALID_ARGUMENT,
    message: "the path cannot be read as a URL path",
    details: [{ reason: "MALFORMED_REQUEST", domain: "shopmesh.edge" }],
  });
});

test("a gRPC-Web call on a path with no route is a trailers-only UNIMPLEMENTED with its details", async (t) => {
  const envoy = await startEnvoy({ services: {}, tls: CERTS, waitHealthy: false });
  t.teardown(() => envoy.stop());
  // The internal API has no route at the edge, and neither has a made-up service.
  for (const path of ["/shop.product.v1.InventoryService/ReserveStock", "/shop.nope.v1.X/Y"]) {
    for (const type of ["application/grpc-web+proto", "application/grpc-web-text"]) {
      const web = await edgeFetch(`https://${envoy.address}${path}`, {
        method: "POST",
        headers: { "content-type": type },
        body: type.endsWith("text")
          ? grpcFrame(Buffer.alloc(0)).toString("base64")
          : grpcFrame(Buffer.alloc(0)),
      });
      t.deepEqual(
        trailersOnly(web),
        { http: 200, code: Code.UNIMPLEMENTED, reason: "UNKNOWN_METHOD", domain: "shopmesh.edge" },
        `${path} as ${type}`,
      );
    }
  }
});

test("a request whose body never comes is ended at the edge's request timeout, DEADLINE_EXCEEDED; a watch whose request came whole goes on", async (t) => {
  // An upstream that takes every stream and never answers: what matters is what Envoy does.
  const upstream = http2.createServer();
  const streams: http2.ServerHttp2Stream[] = [];
  upstream.on("stream", (stream) => {
    // Envoy resets the upstream half of a request it gave up on.
    stream.on("error", () => {});
    streams.push(stream);
  });
  await new Promise<void>((resolve) => upstream.listen(0, "127.0.0.1", resolve));
  t.teardown(() => {
    for (const stream of streams) stream.destroy();
    upstream.close();
  });
  const port = (upstream.address() as AddressInfo).port;
  const envoy = await startEnvoy({
    services: { order: [{ host: "127.0.0.1", port }] },
    requestTimeoutMs: 1_000,
    waitHealthy: false,
  });
  t.teardown(() => envoy.stop());
  const session = http2.connect(`http://${envoy.address}`);
  t.teardown(() => session.destroy());
  const token = await tokenFor("usr_stalled");
  const watch = (endStream: boolean) =>
    session.request(
      {
        ":method": "POST",
        ":path": "/shop.order.v1.OrderService/WatchOrder",
        "content-type": "application/grpc",
        te: "trailers",
        authorization: `Bearer ${token}`,
      },
      { endStream },
    );

  // Headers, then nothing: not even the message's first byte.
  const stalled = watch(false);
  const [headers] = (await once(stalled, "response")) as [http2.IncomingHttpHeaders];
  const metadata = new Metadata();
  metadata.set(
    "grpc-status-details-bin",
    Buffer.from(String(headers["grpc-status-details-bin"] ?? ""), "base64"),
  );
  t.is(headers["grpc-status"], String(Code.DEADLINE_EXCEEDED));
  t.like(decodeStatus(metadata), { reason: "REQUEST_TIMEOUT", domain: "shopmesh.edge" });
  // And the service's side of it is let go too.
  await until("the upstream stream to close", () => streams[0]?.closed === true);

  // REST, its body begun and never ended: never transcoded, it is still answered as REST.
  const rest = session.request(
    {
      ":method": "POST",
      ":path": "/products",
      "content-type": "application/json",
      authorization: `Bearer ${ADMIN_TOKEN}`,
    },
    { endStream: false },
  );
  rest.write('{"name":');
  const [restHeaders] = (await once(rest, "response")) as [http2.IncomingHttpHeaders];
  const chunks: Buffer[] = [];
  for await (const chunk of rest) chunks.push(chunk as Buffer);
  t.is(Number(restHeaders[":status"]), 408);
  t.is(restHeaders["content-type"], "application/json");
  const body = JSON.parse(Buffer.concat(chunks).toString()) as {
    code: number;
    details: { reason: string; domain: string }[];
  };
  t.is(body.code, Code.DEADLINE_EXCEEDED);
  t.like(body.details[0], { reason: "REQUEST_TIMEOUT", domain: "shopmesh.edge" });

  // A whole request (an empty message would do; END_STREAM with the headers here): the watch
  // stays open past the request timeout, waiting for the upstream's first message.
  const whole = watch(true);
  let answered = false;
  whole.on("response", () => {
    answered = true;
  });
  await new Promise((resolve) => setTimeout(resolve, 2_500));
  t.false(answered, "Envoy ended a watch whose request had arrived");
  t.false(whole.closed, "Envoy closed a watch whose request had arrived");
  whole.close();
});
