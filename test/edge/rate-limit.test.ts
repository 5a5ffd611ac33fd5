// Each caller's rate limit at the edge (deploy/envoy/rate-limit.ts), through a real Envoy in
// front of real replicas: a token's subject has a bucket of its own, whichever door it calls
// through; calls without a token share their address's; a refused call is RESOURCE_EXHAUSTED
// (RATE_LIMITED) in every protocol's form, and reaches no service. Before any token is checked,
// an address has a looser bucket, which counts the calls whose tokens fail.
import { Metadata } from "@grpc/grpc-js";
import test from "ava";
import { ADDRESS_CALLS_PER_CALLER } from "../../deploy/envoy/rate-limit.js";
import { ErrorInfo } from "../../gen/ts/google/rpc/error_details.js";
import { OrderServiceService } from "../../gen/ts/shop/order/v1/order.js";
import { type Product, ProductServiceService } from "../../gen/ts/shop/product/v1/product.js";
import { type User, UserServiceService } from "../../gen/ts/shop/user/v1/user.js";
import { createClient } from "../../kit/client/index.js";
import { Code, ServiceError } from "../../kit/errors.js";
import { addProduct, addUser } from "../../scripts/lib/seed.js";
import type { ServiceName } from "../../services/registry.js";
import {
  CERTS,
  edgeFetch,
  edgeTransport,
  meshTransport,
  testCallers,
  tokenFor,
} from "../helpers/credentials.js";
import { type EnvoyHandle, startEnvoy } from "../helpers/envoy.js";
import { fleetEndpoints, type ProcessFleet, spawnProcessFleet } from "../helpers/fleet.js";
import { grpcFrame } from "../helpers/grpc-frame.js";

/** Each caller's calls; its bucket gains one back every 20 minutes, so none during the test. */
const CALLS = 3;
const limited = { reason: "RATE_LIMITED" };

let fleet: ProcessFleet;
let envoy: EnvoyHandle;
let product: Product;
const users: User[] = [];

test.before(async () => {
  fleet = await spawnProcessFleet({ tls: CERTS });
  envoy = await startEnvoy({
    services: fleetEndpoints(fleet),
    tls: CERTS,
    rateLimit: { calls: CALLS, seconds: 3600 },
  });
  // Set up on the services' own ports, so that no bucket is touched.
  const userClient = direct(UserServiceService, "user");
  const productClient = direct(ProductServiceService, "product");
  for (const name of ["Alice", "Bob", "Carol", "Dan"]) {
    users.push(await addUser(userClient, { displayName: name }));
  }
  product = await addProduct(productClient, { stock: 10 });
  userClient.close();
  productClient.close();
});

test.after.always(async () => {
  await envoy?.stop();
  await fleet?.stop();
});

/** A client on a service's own port, as an operator's tool: no bucket is touched. */
const direct = <S extends Parameters<typeof createClient>[0]>(definition: S, name: ServiceName) =>
  createClient(definition, fleet.address(name), {
    middleware: testCallers(),
    transport: meshTransport("cli", name),
  });

const through = <S extends Parameters<typeof createClient>[0]>(definition: S) =>
  createClient(definition, envoy.address, { transport: edgeTransport(), readyWaitMs: 0 });

const signedIn = async (user: User) => {
  const metadata = new Metadata();
  metadata.set("authorization", `Bearer ${await tokenFor(user.userId)}`);
  return { metadata };
};

/** A call's code and ErrorInfo, OK as code 0. */
const outcome = (call: Promise<unknown>) =>
  call.then(
    () => ({ code: Code.OK }),
    (error: unknown) => {
      if (!(error instanceof ServiceError)) throw error;
      return { code: error.code, reason: error.details.reason };
    },
  );

test.serial(
  "a subject's calls past its limit are RESOURCE_EXHAUSTED at every door; another subject's are served",
  async (t) => {
    const [alice, bob] = users as [User, User];
    const client = through(UserServiceService);
    t.teardown(() => client.close());
    const asAlice = await signedIn(alice);
    const answers = [];
    for (let i = 0; i < CALLS + 2; i++) {
      answers.push(await outcome(client.getUser({ userId: alice.userId }, asAlice)));
    }
    t.deepEqual(
      answers.map((answer) => answer.code),
      [...Array(CALLS).fill(Code.OK), Code.RESOURCE_EXHAUSTED, Code.RESOURCE_EXHAUSTED],
    );
    t.like(answers.at(-1), limited);
    t.like(await outcome(client.getUser({ userId: bob.userId }, await signedIn(bob))), {
      code: Code.OK,
    });

    // The same subject's bucket at the other doors, each in its protocol's form.
    const authorization = `Bearer ${await tokenFor(alice.userId)}`;
    const rest = await edgeFetch(`https://${envoy.address}/users/${alice.userId}`, {
      headers: { authorization },
    });
    t.is(rest.status, 429, "REST");
    const status = (await rest.json()) as { code: number; details: { reason: string }[] };
    t.like(status, { code: Code.RESOURCE_EXHAUSTED, details: [{ reason: "RATE_LIMITED" }] });

    const url = `https://${envoy.address}/shop.user.v1.UserService/GetUser`;
    const message = Buffer.from(
      UserServiceService.getUser.requestSerialize({ userId: alice.userId }),
    );
    const connect = await edgeFetch(url, {
      method: "POST",
      headers: {
        "content-type": "application/proto",
        "connect-protocol-version": "1",
        authorization,
      },
      body: message,
    });
    t.is(connect.status, 429, "Connect");
    const error = (await connect.json()) as { code: string; details: { value: string }[] };
    t.is(error.code, "resource_exhausted");
    t.like(ErrorInfo.decode(Buffer.from(error.details[0]?.value ?? "", "base64")), {
      ...limited,
      domain: "shopmesh.edge",
    });

    const web = await edgeFetch(url, {
      method: "POST",
      headers: { "content-type": "application/grpc-web+proto", authorization },
      body: grpcFrame(message),
    });
    t.is(web.status, 200, "gRPC-Web: trailers only");
    t.is(web.headers.get("grpc-status"), String(Code.RESOURCE_EXHAUSTED));

    // What operators watch: Envoy's count of refused calls, two gRPC and one at each other door.
    t.is(await envoy.counter("edge_rate_limit.http_local_rate_limit.rate_limited"), 5);
    const prometheus = await envoy.admin("/stats/prometheus");
    t.regex(prometheus, /^envoy_edge_rate_limit_http_local_rate_limit_rate_limited\{\} 5$/m);
  },
);

test.serial("a refused CreateOrder reaches no service: no order, no stock taken", async (t) => {
  const carol = users[2] as User;
  const orders = through(OrderServiceService);
  t.teardown(() => orders.close());
  const asCarol = await signedIn(carol);
  const answers = [];
  for (let i = 0; i <= CALLS; i++) {
    const lines = [{ productId: product.productId, quantity: 1 }];
    const call = orders.createOrder(
      { userId: carol.userId, lines, requestId: `carol-${i}` },
      asCarol,
    );
    answers.push(await outcome(call));
  }
  t.deepEqual(
    answers.map((answer) => answer.code),
    [...Array(CALLS).fill(Code.OK), Code.RESOURCE_EXHAUSTED],
  );
  // Read on the services' own ports: Carol has no calls left at the edge.
  const directOrders = direct(OrderServiceService, "order");
  const directProducts = direct(ProductServiceService, "product");
  t.teardown(() => {
    directOrders.close();
    directProducts.close();
  });
  const listed = await directOrders.listOrders({ userId: carol.userId });
  t.deepEqual(
    listed.orders.map((order) => order.requestId).sort(),
    Array.from({ length: CALLS }, (_, i) => `carol-${i}`),
  );
  const left = await directProducts.getProduct({ productId: product.productId });
  t.is(left.product?.stockQuantity, 10 - CALLS);
});

test.serial(
  "calls without a token count against their address, not against a subject",
  async (t) => {
    const products = through(ProductServiceService);
    t.teardown(() => products.close());
    const request = { productId: product.productId };
    const answers = [];
    for (let i = 0; i <= CALLS; i++) answers.push(await outcome(products.getProduct(request)));
    t.deepEqual(
      answers.map((answer) => answer.code),
      [...Array(CALLS).fill(Code.OK), Code.RESOURCE_EXHAUSTED],
    );
    t.like(answers.at(-1), limited);
    // A subject calling from the same address has a bucket of its own, whatever its name.
    for (const userId of [(users[3] as User).userId, "-"]) {
      const call = products.getProduct(request, await signedIn({ userId } as User));
      t.like(await outcome(call), { code: Code.OK }, userId);
    }
  },
);

test.serial(
  "calls whose tokens fail count against their address before the token is checked",
  async (t) => {
    const strict = await startEnvoy({
      services: fleetEndpoints(fleet),
      tls: CERTS,
      rateLimit: { calls: 1, seconds: 3600 },
    });
    t.teardown(() => strict.stop());
    const client = createClient(UserServiceService, strict.address, {
      transport: edgeTransport(),
      readyWaitMs: 0,
    });
    t.teardown(() => client.close());
    const forged = new Metadata();
    forged.set("authorization", "Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl");
    const answers = [];
    for (let i = 0; i <= ADDRESS_CALLS_PER_CALLER; i++) {
      const call = client.getUser({ userId: (users[0] as User).userId }, { metadata: forged });
      answers.push((await outcome(call)).code);
    }
    t.deepEqual(answers, [
      ...Array(ADDRESS_CALLS_PER_CALLER).fill(Code.UNAUTHENTICATED),
      Code.RESOURCE_EXHAUSTED,
    ]);
  },
);
