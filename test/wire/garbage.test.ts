// Wire-level garbage on every rpc a shop server answers, its own services, health (Check,
// Watch, List) and reflection (v1 and v1alpha): bytes that do not decode are INVALID_ARGUMENT
// MALFORMED_REQUEST with google.rpc details, never INTERNAL or UNKNOWN, and the server keeps
// serving. Long text a server echoes is clipped so that the reply still reaches the client, and a
// caller that does not read is held back.
import { once } from "node:events";
import { connect } from "node:http2";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import * as grpc from "@grpc/grpc-js";
import test, { type ExecutionContext } from "ava";
import { HealthCheckResponse_ServingStatus, HealthService } from "../../gen/ts/health/v1/health.js";
import { createClient } from "../../kit/client/index.js";
import { packageOf, type ServiceDefinition } from "../../kit/contract.js";
import { Code, fromGrpcError, type ServiceError } from "../../kit/errors.js";
import { addProduct, addUser } from "../../scripts/lib/seed.js";
import { registry } from "../../services/registry.js";
import { stillServing, undecodable } from "../helpers/bad-input.js";
import { adminMetadata } from "../helpers/credentials.js";
import { startFleet } from "../helpers/fleet.js";
import { grpcFrame, rawGrpcCall } from "../helpers/grpc-frame.js";
import { reflect } from "../helpers/reflection.js";

type Kind = "unary" | "server" | "bidi";

/** Every rpc of a proto service as [path, kind, expected ErrorInfo domain]. */
function rpcsOf(definition: ServiceDefinition): [string, Kind, string][] {
  return Object.values(definition).map((m) => [
    m.path,
    m.requestStream ? "bidi" : m.responseStream ? "server" : "unary",
    packageOf(m.path.slice(1, m.path.lastIndexOf("/"))),
  ]);
}

const common: [string, Kind, string][] = [
  ["/grpc.health.v1.Health/Check", "unary", "grpc.health.v1"],
  ["/grpc.health.v1.Health/Watch", "server", "grpc.health.v1"],
  ["/grpc.health.v1.Health/List", "unary", "grpc.health.v1"],
  ["/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", "bidi", "grpc.reflection.v1"],
  [
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    "bidi",
    "grpc.reflection.v1alpha",
  ],
];

/** Sends `bytes` as the one request message of `path` and returns how the call ended. */
function send(client: grpc.Client, path: string, kind: Kind, bytes: Buffer) {
  const identity = (b: Buffer) => b;
  const options = { deadline: Date.now() + 10_000 };
  return new Promise<{ error?: ServiceError; messages: number }>((resolve) => {
    let messages = 0;
    const done = (error: grpc.ServiceError | null) =>
      resolve({ ...(error && { error: fromGrpcError(error) }), messages });
    if (kind === "unary") {
      client.makeUnaryRequest(path, identity, identity, bytes, adminMetadata(), options, done);
      return;
    }
    const stream =
      kind === "server"
        ? client.makeServerStreamRequest(path, identity, identity, bytes, adminMetadata(), options)
        : client.makeBidiStreamRequest(path, identity, identity, adminMetadata(), options);
    stream.on("data", () => messages++);
    stream.on("error", done);
    stream.on("end", () => done(null));
    if (kind === "bidi") {
      const bidi = stream as grpc.ClientDuplexStream<Buffer, Buffer>;
      bidi.write(bytes);
      bidi.end();
    }
  });
}

async function serving(t: ExecutionContext, address: string, service: string) {
  const health = createClient(HealthService, address);
  t.teardown(() => health.close());
  const { status } = await health.check({ service });
  t.is(status, HealthCheckResponse_ServingStatus.SERVING, service);
}

test("undecodable bytes on every rpc, health and reflection included, are MALFORMED_REQUEST", async (t) => {
  const fleet = await startFleet(t);
  let calls = 0;
  for (const service of registry.services) {
    const { address } = fleet[service.name].server;
    const rpcs = Object.values(service.module.serves).flatMap((definition) =>
      rpcsOf(definition as ServiceDefinition),
    );
    const client = new grpc.Client(address, grpc.credentials.createInsecure());
    t.teardown(() => client.close());
    for (const [path, kind, domain] of [...rpcs, ...common]) {
      for (const [name, bytes] of undecodable) {
        const { error, messages } = await send(client, path, kind, bytes);
        calls++;
        const where = `${path} (${kind}), ${name}`;
        t.is(Code[error?.code ?? 0], "INVALID_ARGUMENT", `${where}: ${error?.message}`);
        t.is(error?.details.reason, "MALFORMED_REQUEST", where);
        t.is((error?.details as { domain?: string } | undefined)?.domain, domain, where);
        t.is(messages, 0, where);
      }
    }
    for (const protoService of service.protoServices) await serving(t, address, protoService);
  }
  t.log(`${calls} calls with undecodable bytes, every one INVALID_ARGUMENT`);
});

test("a 1 MB health service name is NOT_FOUND with an ErrorInfo and a clipped message the client receives", async (t) => {
  const fleet = await startFleet(t);
  const health = createClient(HealthService, fleet.order.server.address);
  t.teardown(() => health.close());
  const service = "s".repeat(1_000_000);
  const error = await t.throwsAsync(health.check({ service }));
  t.is(Code[(error as ServiceError).code], "NOT_FOUND", error?.message.slice(0, 200));
  // The library gives no details; the kit adds the ErrorInfo every failure carries.
  t.like((error as ServiceError).details, { reason: "NOT_FOUND", domain: "grpc.health.v1" });
  t.true((error?.message.length ?? 0) <= 1_100, `${error?.message.length} characters`);
  // Watch answers SERVICE_UNKNOWN for it, and List still works.
  for await (const { status } of health.watch({ service }, { timeoutMs: 2_000 })) {
    t.is(status, HealthCheckResponse_ServingStatus.SERVICE_UNKNOWN);
    break;
  }
  const { statuses } = await health.list({});
  t.truthy(statuses["shop.order.v1.OrderService"]);
});

test("text clipped between the two halves of an emoji still reaches the client, and the server keeps serving", async (t) => {
  const fleet = await startFleet(t);
  // Long text of emoji, once from an even index and once from an odd one, so that one of the two
  // clips, wherever it falls, splits an emoji.
  const both = (count: number) => ["", "a"].map((lead) => `${lead}${"\u{1F600}".repeat(count)}`);
  const health = createClient(HealthService, fleet.user.server.address);
  t.teardown(() => health.close());
  for (const service of both(600)) {
    const unknown = await t.throwsAsync(health.check({ service }));
    t.is(Code[(unknown as ServiceError).code], "NOT_FOUND", unknown?.message.slice(0, 200));
    t.like((unknown as ServiceError).details, { reason: "NOT_FOUND", domain: "grpc.health.v1" });
  }

  const user = await addUser(fleet.users);
  const product = await addProduct(fleet.products);
  for (const path of both(150)) {
    for (const call of [
      fleet.users.updateUser({
        user: { userId: user.userId, displayName: "X" },
        updateMask: [path],
      }),
      fleet.products.updateProduct({
        product: { productId: product.productId, name: "X" },
        updateMask: [path],
      }),
    ]) {
      const error = (await t.throwsAsync(call as Promise<unknown>)) as ServiceError;
      t.is(Code[error.code], "INVALID_ARGUMENT", error.message.slice(0, 200));
      t.deepEqual(
        error.details.fieldViolations?.map((v) => v.field),
        ["update_mask"],
      );
      t.true(error.message.isWellFormed(), "no half of an emoji in the status");
    }
  }
  await stillServing(t, fleet);
});

test("a health Watch of a name the server does not know keeps nothing of it once it ends", async (t) => {
  const fleet = await startFleet(t);
  const health = createClient(HealthService, fleet.user.server.address);
  t.teardown(() => health.close());
  // The fleet shares this process: what its server keeps of the names shows in this heap.
  setFlagsFromString("--expose-gc");
  const gc = runInNewContext("gc") as () => void;
  const heapMb = () => {
    gc();
    return process.memoryUsage().heapUsed / 1e6;
  };
  const before = heapMb();
  for (let i = 0; i < 60; i++) {
    const service = `unknown-${i}-`.padEnd(1_000_000, "x");
    for await (const { status } of health.watch({ service }, { timeoutMs: 10_000 })) {
      t.is(status, HealthCheckResponse_ServingStatus.SERVICE_UNKNOWN);
      break;
    }
  }
  // The watches' cancels reach the server.
  await new Promise((resolve) => setTimeout(resolve, 500));
  const grown = heapMb() - before;
  t.true(grown < 20, `${grown.toFixed(1)} MB kept after 60 watches of 1 MB names`);
});

test("reflection answers a 3 MB symbol with an error the client receives, on v1 and v1alpha", async (t) => {
  const fleet = await startFleet(t);
  for (const version of ["v1", "v1alpha"] as const) {
    const [answer] = await reflect(fleet.product.server.address, version, [
      { file_containing_symbol: `x${"y".repeat(3_000_000)}` },
    ]);
    t.is(answer?.kind, "error_response", version);
    t.is(answer?.error?.code, Code.NOT_FOUND, version);
    t.true((answer?.error?.message.length ?? 0) <= 1_100, version);
  }
});

test("a reflection caller that never reads its answers is held back, not buffered for", async (t) => {
  const fleet = await startFleet(t);
  const session = connect(`http://${fleet.product.server.address}`);
  t.teardown(() => session.destroy());
  const { stream } = rawGrpcCall(
    session,
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
  );
  stream.pause();
  // file_containing_symbol (field 4): each answer is a few KB, its request 33 bytes.
  const symbol = Buffer.from("shop.order.v1.OrderService");
  const request = grpcFrame(Buffer.concat([Buffer.from([0x22, symbol.length]), symbol]));
  const batch = Buffer.concat(Array.from({ length: 1_000 }, () => request));
  let sent = 0;
  while (sent < 100 * batch.length) {
    const more = stream.write(batch);
    sent += batch.length;
    if (more) continue;
    const drained = await Promise.race([
      once(stream, "drain").then(() => true),
      new Promise((resolve) => setTimeout(resolve, 2_000, false)),
    ]);
    if (!drained) break;
  }
  // Unheld, the server read all 100,000 requests and kept their answers: 44 MB of heap.
  t.true(
    sent < 10 * batch.length,
    `${sent} bytes of requests taken from a caller that reads nothing`,
  );
});
