// Server reflection on the services' own ports: every file as buf built it, byte for byte, over
// v1 and v1alpha; each port lists what it serves (plus health and reflection), and describes any
// type of the contract. Through Envoy: test/edge/front-door.test.ts.
import test from "ava";
import { descriptorFiles } from "../../kit/reflection.js";
import { repoRoot } from "../../scripts/lib/launcher.js";
import { registry, type ServiceName } from "../../services/registry.js";
import { startFleet, type TestFleet } from "../helpers/fleet.js";
import { grpcurl } from "../helpers/grpcurl.js";
import { type ReflectionVersion, reflect } from "../helpers/reflection.js";

const VERSIONS = ["v1", "v1alpha"] satisfies ReflectionVersion[];
const INFRA = [
  "grpc.health.v1.Health",
  "grpc.reflection.v1.ServerReflection",
  "grpc.reflection.v1alpha.ServerReflection",
];
const INTERNAL_FILE = "shop/product/v1/inventory.proto";
const FILES = descriptorFiles();

let fleet: TestFleet;
// One fleet for the file: its teardowns run after every test.
const teardowns: (() => unknown)[] = [];
test.before(async () => {
  fleet = await startFleet({ teardown: (done: () => unknown) => teardowns.push(done) } as never);
});
test.after.always(async () => {
  for (const done of teardowns.reverse()) await done();
});

const address = (name: ServiceName) => fleet[name].server.address;

for (const version of VERSIONS) {
  test(`${version}: every file of the descriptor set comes back byte for byte`, async (t) => {
    t.true(FILES.size > 10, "the descriptor set holds our files and their imports");
    const names = [...FILES.keys()].filter((name) => name !== INTERNAL_FILE);
    const answers = await reflect(
      address("product"),
      version,
      names.map((name) => ({ file_by_filename: name })),
    );
    answers.forEach((answer, i) => {
      const name = names[i] as string;
      t.is(answer.kind, "file_descriptor_response", `${name}: ${answer.error?.message}`);
      // The file first, then imports not yet sent on this stream: each one exact.
      t.is(answer.files?.[0]?.name, name);
      for (const [k, raw] of (answer.raw ?? []).entries()) {
        const sent = answer.files?.[k]?.name as string;
        t.true(Buffer.from(FILES.get(sent) as Uint8Array).equals(raw), `${sent} differs`);
      }
    });
  });

  test(`${version}: options and comments survive (field_behavior, google.api.http)`, async (t) => {
    const [answer] = await reflect(address("user"), version, [
      { file_containing_symbol: "shop.product.v1.Product" },
    ]);
    const product = answer?.files?.find((file) => file.name === "shop/product/v1/product.proto");
    t.truthy(product);
    const message = product?.messageType.find((m) => m.name === "Product");
    const id = message?.field.find((f) => f.name === "product_id");
    const raw = answer?.raw?.[0] as Buffer;
    t.true(Buffer.from(FILES.get("shop/product/v1/product.proto") as Uint8Array).equals(raw));
    t.truthy(id?.options, "product_id has its options");
    t.true((product?.sourceCodeInfo?.location.length ?? 0) > 0, "source comments are served");
  });

  for (const name of registry.names) {
    test(`${version}: the ${name} port lists its own services, health and reflection`, async (t) => {
      const [listed] = await reflect(address(name), version, [{ list_services: "" }]);
      t.deepEqual(
        listed?.services?.slice().sort(),
        [...registry.get(name).publicServices, ...INFRA].sort(),
      );
    });
  }

  test(`${version}: any port describes any type of the contract`, async (t) => {
    const answers = await reflect(address("user"), version, [
      { file_containing_symbol: "shop.order.v1.OrderService" },
      { file_containing_symbol: "shop.order.v1.CreateOrderRequest.lines" },
      { file_containing_symbol: "shop.product.v1.ProductService.GetProduct" },
      { file_containing_symbol: "google.rpc.PreconditionFailure.Violation" },
      { file_containing_symbol: "shop.nope.v1.Nope" },
    ]);
    t.deepEqual(
      answers.map((answer) => answer.files?.[0]?.name ?? answer.error?.code),
      [
        "shop/order/v1/order.proto",
        "shop/order/v1/order.proto",
        "shop/product/v1/product.proto",
        "google/rpc/error_details.proto",
        5, // NOT_FOUND
      ],
    );
  });

  test(`${version}: the internal API is not shown to a caller outside the mesh`, async (t) => {
    const answers = await reflect(address("product"), version, [
      { file_by_filename: INTERNAL_FILE },
      { file_containing_symbol: "shop.product.v1.InventoryService" },
      { file_containing_symbol: "shop.product.v1.ReserveStockRequest" },
    ]);
    t.deepEqual(
      answers.map((answer) => answer.error?.code),
      [5, 5, 5],
    );
  });
}

test("grpcurl: list on the user port shows only what it serves; describe reaches any type", async (t) => {
  const listed = await grpcurl(["-plaintext", address("user"), "list"]);
  t.is(listed.code, 0, listed.stderr);
  t.deepEqual(
    listed.stdout.trim().split("\n").sort(),
    ["shop.user.v1.UserService", ...INFRA].sort(),
  );
  const described = await grpcurl([
    "-plaintext",
    address("user"),
    "describe",
    "shop.order.v1.OrderService",
  ]);
  t.is(described.code, 0, described.stderr);
  t.regex(described.stdout, /rpc CreateOrder/);
  // With the options, as -protoset shows them: field_behavior of product_id.
  const fromPort = await grpcurl([
    "-plaintext",
    address("user"),
    "describe",
    "shop.product.v1.Product",
  ]);
  const fromSet = await grpcurl([
    "-protoset",
    `${repoRoot}/gen/descriptor/shop.binpb`,
    "describe",
    "shop.product.v1.Product",
  ]);
  t.is(fromPort.code, 0, fromPort.stderr);
  t.is(fromPort.stdout, fromSet.stdout);
  t.regex(fromPort.stdout, /OUTPUT_ONLY/);
});

test("grpcurl: a service another port serves is not listed there, and answers UNIMPLEMENTED", async (t) => {
  const call = await grpcurl([
    "-plaintext",
    "-d",
    "{}",
    address("user"),
    "shop.order.v1.OrderService/ListOrders",
  ]);
  t.regex(call.stderr, /Code: Unimplemented/);
});
