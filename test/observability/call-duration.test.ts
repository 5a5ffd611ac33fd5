// A call's duration in its log line and in grpc_server_handling_seconds runs to the status its
// caller got. A handler that works on after its caller's deadline (a saga giving stock back, say)
// does not lengthen it.
import http2 from "node:http2";
import { setTimeout as sleep } from "node:timers/promises";
import test from "ava";
import { GetProductRequest } from "../../gen/ts/shop/product/v1/product.js";
import { Code } from "../../kit/errors.js";
import type { ServerMiddleware } from "../../kit/middleware/index.js";
import { registry } from "../../services/registry.js";
import { eventually } from "../helpers/eventually.js";
import { captureLogger, start } from "../helpers/fleet.js";
import { grpcFrame, rawGrpcCall } from "../helpers/grpc-frame.js";
import { sampleValue } from "../helpers/metrics.js";

/** Watches the call's signal, as a handler awaiting its dependencies does, then works on 1.5 s. */
const worksOn: ServerMiddleware = {
  name: "works-on",
  wrap: (_method, next) => async (request, ctx) => {
    ctx.signal.addEventListener("abort", () => {});
    await sleep(1_500);
    return next(request, ctx);
  },
};

test("a call whose deadline passes while its handler works on is logged with the time to its deadline", async (t) => {
  const product = registry.services.find((s) => s.name === "product");
  if (!product) throw new Error("no product service in the registry");
  const capture = captureLogger("product");
  const service = await start(t, product.module, {
    logger: capture.logger,
    middleware: [worksOn],
  });
  const session = http2.connect(`http://${service.server.address}`);
  t.teardown(() => session.close());
  const path = "/shop.product.v1.ProductService/GetProduct";
  const { stream, status } = rawGrpcCall(session, path, { "grpc-timeout": "300m" });
  stream.end(grpcFrame(GetProductRequest.encode({ productId: "prd_none" }).finish()));
  t.is(await status, String(Code.DEADLINE_EXCEEDED));

  const line = await eventually("the call's log line", () =>
    capture.lines.find((entry) => entry.method === path),
  );
  t.is(line.code, "DEADLINE_EXCEEDED");
  const ms = Number(line.duration_ms);
  t.true(ms >= 250 && ms < 1_000, `duration_ms ${ms}`);
  const seconds = Number(
    sampleValue(await service.metrics.text(), "grpc_server_handling_seconds_sum", {
      grpc_method: "GetProduct",
    }),
  );
  t.true(seconds >= 0.25 && seconds < 1, `handling seconds ${seconds}`);
});
