// A request is decoded only within bounds. Four MB of empty list items or of unknown fields
// compress to a few KB, and decoded would be two million objects or a fifth of a second of CPU
// each: a few such requests ran a service with the image's memory limit out of memory. They are
// refused before they are built, and every service keeps serving.
import * as grpc from "@grpc/grpc-js";
import test from "ava";
import { Code } from "../../kit/errors.js";
import { openRawClient } from "../helpers/bad-input.js";
import { launch } from "../helpers/launch.js";

const GZIP = { "grpc.default_compression_algorithm": 2 };

/** `count` copies of the two bytes `pair` back to back, just under grpc's 4 MB message limit. */
function repeated(pair: [number, number], count = 2_000_000): Buffer {
  const bytes = Buffer.alloc(count * 2);
  for (let i = 0; i < bytes.length; i += 2) bytes.set(pair, i);
  return bytes;
}

test("two million list items or unknown fields in a compressed request are refused before they are built", async (t) => {
  // Compiled, with the image's NODE_OPTIONS (an old generation of 96 MB), as production runs.
  const shop = await launch(t, "start", { args: ["--no-seed"] });
  const rawCaller = (address: string) => {
    const call = openRawClient(address, 20_000, {
      credentials: grpc.credentials.createInsecure(),
      options: GZIP,
    });
    t.teardown(() => call.close());
    return call;
  };
  const order = rawCaller(shop.addresses.order);
  const product = rawCaller(shop.addresses.product);

  // CreateOrderRequest.lines is field 2: 0x12 0x00 is one empty OrderLine.
  const lines = await Promise.all(
    Array.from({ length: 4 }, () =>
      order("/shop.order.v1.OrderService/CreateOrder", repeated([0x12, 0x00])),
    ),
  );
  for (const { error } of lines) {
    t.is(error?.code, Code.INVALID_ARGUMENT, error?.message);
    t.is(error?.details.reason, "MALFORMED_REQUEST");
    const violations = error?.details.fieldViolations ?? [];
    t.deepEqual(
      violations.map((v) => `${v.field}: ${v.description}`),
      ["lines: holds more than 1000 items"],
    );
  }

  // Field 15 is not in GetProductRequest: 0x78 0x00 is an unknown varint. And the same fields
  // inside one unknown group (0x7b … 0x7c), whose fields a decoder reads past one by one too.
  const fields = repeated([0x78, 0x00]);
  const group = Buffer.concat([Buffer.from([0x7b]), repeated([0x08, 0x00]), Buffer.from([0x7c])]);
  const unknown = await Promise.all(
    [fields, fields, group, group].map((bytes) =>
      product("/shop.product.v1.ProductService/GetProduct", bytes),
    ),
  );
  for (const { error } of unknown) {
    t.is(error?.code, Code.INVALID_ARGUMENT, error?.message);
    t.is(error?.details.reason, "MALFORMED_REQUEST");
    t.regex(error?.message ?? "", /more than 10000 fields/);
  }

  // A list at the bound is decoded, and the handler's own check answers.
  const { error } = await order(
    "/shop.order.v1.OrderService/CreateOrder",
    Buffer.concat([Buffer.from([0x0a, 0x03, 0x75, 0x73, 0x72]), repeated([0x12, 0x00], 1000)]),
  );
  t.is(error?.code, Code.INVALID_ARGUMENT, error?.message);
  t.is(error?.details.reason, "INVALID_ARGUMENT");

  // Every service is still up: the launcher stops with 0 only when none of them died.
  t.is(await shop.stop(), 0, shop.output().slice(-2000));
});
