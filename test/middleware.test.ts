// The middleware chains, as the next concerns (auth, metrics, tracing) will use them: a middleware
// added to a service or a client sees the rpc as the contract states it, the call's context, and
// the status the caller really got, including a response that fails to encode, a deadline that
// passes, and a cancellation. The kit's own concerns (logging, x-request-id, deadlines) ride the
// same chains.
import { Metadata } from "@grpc/grpc-js";
import test from "ava";
import { InventoryServiceService } from "../gen/ts/shop/product/v1/inventory.js";
import { ProductServiceService } from "../gen/ts/shop/product/v1/product.js";
import { UserServiceService } from "../gen/ts/shop/user/v1/user.js";
import { createClient } from "../kit/client/index.js";
import { type CallStatus, detachedContext } from "../kit/context.js";
import { type MethodInfo, methodsOf } from "../kit/contract.js";
import { Code, type ServiceError } from "../kit/errors.js";
import {
  type ClientMiddleware,
  defaultClientMiddleware,
  type ServerMiddleware,
  X_REQUEST_ID,
} from "../kit/middleware/index.js";
import { addProduct, addUser } from "../scripts/lib/seed.js";
import { createOrderService } from "../services/order/service.js";
import { createProductService } from "../services/product/service.js";
import { userService } from "../services/user/service.js";
import { asAllowedCaller, testCallers } from "./helpers/credentials.js";
import { eventually } from "./helpers/eventually.js";
import { captureLogger, clientsFor, orderLine, start, startFleet } from "./helpers/fleet.js";
import { expectStatus } from "./helpers/status.js";

interface Seen {
  method: MethodInfo;
  header?: string;
  deadline?: Date;
  peer: string;
  xRequestId?: string;
  status?: CallStatus;
}

/** A server middleware that records what it sees of every call, as a metrics one would. */
function recorder(): { middleware: ServerMiddleware; seen: Seen[] } {
  const seen: Seen[] = [];
  return {
    seen,
    middleware: {
      name: "recorder",
      wrap: (method, next) => (request, ctx) => {
        const header = ctx.metadata.get("x-test")[0];
        const entry: Seen = {
          method,
          peer: ctx.peer,
          ...(typeof header === "string" && { header }),
          ...(ctx.deadline && { deadline: ctx.deadline }),
          ...(ctx.get(X_REQUEST_ID) && { xRequestId: ctx.get(X_REQUEST_ID) }),
        };
        seen.push(entry);
        ctx.onFinish((status) => {
          entry.status = status;
        });
        return next(request, ctx);
      },
    },
  };
}

const finished = (seen: Seen[], rpc: string) =>
  eventually(`the status of ${rpc}`, () => seen.find((s) => s.method.rpc === rpc && s.status));

test("a server middleware sees the rpc, the call's context and the status the caller got", async (t) => {
  const { middleware, seen } = recorder();
  const service = await start(t, createProductService(), { middleware: [middleware] });
  const products = createClient(ProductServiceService, service.server.address, {
    middleware: testCallers(),
  });
  const inventory = createClient(InventoryServiceService, service.server.address);
  t.teardown(() => products.close());
  t.teardown(() => inventory.close());

  const metadata = new Metadata();
  metadata.set("x-test", "hello");
  metadata.set("x-request-id", "req-from-the-caller");
  const mug = await addProduct(products);
  await products.getProduct({ productId: mug.productId }, { metadata, timeoutMs: 3_000 });
  const ok = seen.find((s) => s.method.rpc === "GetProduct" && s.header === "hello") as Seen;
  t.like(ok.method, {
    service: "shop.product.v1.ProductService",
    rpc: "GetProduct",
    path: "/shop.product.v1.ProductService/GetProduct",
    kind: "unary",
    idempotency: "NO_SIDE_EFFECTS",
    declared: true,
    paged: false,
    keyed: false,
  });
  t.is(ok.xRequestId, "req-from-the-caller");
  t.regex(ok.peer, /127\.0\.0\.1:\d+$/);
  t.true((ok.deadline?.getTime() ?? 0) > Date.now(), "the caller's deadline arrived");
  t.like((await finished(seen, "GetProduct")).status, { code: Code.OK });

  await expectStatus(
    t,
    products.getProduct({ productId: "prd_missing" }),
    Code.NOT_FOUND,
    "PRODUCT_NOT_FOUND",
  );
  const missing = await eventually("the NOT_FOUND status", () =>
    seen.find((s) => s.method.rpc === "GetProduct" && s.status?.code === Code.NOT_FOUND),
  );
  t.regex(missing.status?.details ?? "", /prd_missing/);
  t.is(missing.status?.reason, "PRODUCT_NOT_FOUND");

  await inventory.reserveStock({ reservationId: "r-1", lines: [orderLine(mug.productId, 1)] });
  t.like((await finished(seen, "ReserveStock")).method, { idempotency: "IDEMPOTENT" });
});

test("a call cut because the call it serves ran out of time ends DEADLINE_EXCEEDED, not CANCELLED", async (t) => {
  const ended: string[] = [];
  // What a service's client middleware (its metrics, say) sees of each outgoing call.
  const watching: ClientMiddleware = {
    name: "watching",
    wrap: (method, next) => (request, call) =>
      (next(request, call) as Promise<unknown>).catch((error: ServiceError) => {
        ended.push(`${method.rpc} ${Code[error.code]}`);
        throw error;
      }),
  };
  const service = await start(t, createProductService(), {
    middleware: [
      {
        name: "slow",
        wrap: (_method, next) => async (request, ctx) => {
          await new Promise((resolve) => setTimeout(resolve, 2_000));
          return next(request, ctx);
        },
      },
    ],
  });
  const products = createClient(ProductServiceService, service.server.address, {
    middleware: [...defaultClientMiddleware({ defaultTimeoutMs: 5_000 }), watching],
  });
  t.teardown(() => products.close());
  // The served call's end as grpc-js reports it at its deadline: just before the outgoing
  // call's own deadline (the same instant) would end it.
  const served = new AbortController();
  const deadline = new Date(Date.now() + 300);
  const ctx = detachedContext(methodsOf(ProductServiceService).GetProduct as MethodInfo, {
    deadline,
    signal: served.signal,
  });
  setTimeout(() => served.abort(), 285);
  await t.throwsAsync(products.getProduct({ productId: "prd_any" }, { ctx }));
  t.deepEqual(ended, ["GetProduct DEADLINE_EXCEEDED"]);
  // A caller that went away before its deadline is a cancel.
  const early = new AbortController();
  const gone = detachedContext(methodsOf(ProductServiceService).GetProduct as MethodInfo, {
    deadline: new Date(Date.now() + 5_000),
    signal: early.signal,
  });
  setTimeout(() => early.abort(), 100);
  await t.throwsAsync(products.getProduct({ productId: "prd_any" }, { ctx: gone }));
  t.deepEqual(ended, ["GetProduct DEADLINE_EXCEEDED", "GetProduct CANCELLED"]);
});

test("the final status is what the caller got: an unencodable response, a deadline, a cancel", async (t) => {
  const { middleware, seen } = recorder();
  // Innermost, as a buggy handler: a response the encoder cannot write, a slow one.
  const buggy: ServerMiddleware = {
    name: "buggy",
    wrap: (method, next) => {
      if (method.rpc === "GetProduct") {
        return async () => ({ product: { productId: "prd_x", stockQuantity: "many" } });
      }
      if (method.rpc === "ListProducts") {
        return async (request, ctx) => {
          await new Promise((resolve) => setTimeout(resolve, 1_000));
          return next(request, ctx);
        };
      }
      return next;
    },
  };
  const logs = captureLogger("product");
  const service = await start(t, createProductService(), {
    logger: logs.logger,
    middleware: [middleware, buggy],
  });
  const products = createClient(ProductServiceService, service.server.address, {
    middleware: testCallers(),
  });
  t.teardown(() => products.close());

  await expectStatus(t, products.getProduct({ productId: "prd_x" }), Code.INTERNAL, "INTERNAL");
  const unencodable = await finished(seen, "GetProduct");
  t.is(unencodable.status?.code, Code.INTERNAL);
  t.regex(String(unencodable.status?.cause), /int32/);
  // The log line says so too, with the cause: our bug, not the caller's.
  const logged = await eventually("the log line of the failed GetProduct", () =>
    logs.lines.find((line) => line.method === "/shop.product.v1.ProductService/GetProduct"),
  );
  t.like(logged, { code: "INTERNAL", level: 50, msg: "rpc failed" });
  t.truthy(logged.err);

  await expectStatus(t, products.listProducts({}, { timeoutMs: 200 }), Code.DEADLINE_EXCEEDED);
  const late = await finished(seen, "ListProducts");
  t.is(late.status?.code, Code.DEADLINE_EXCEEDED, "the handler's OK came too late to count");

  const controller = new AbortController();
  const call = products.listProducts({}, { signal: controller.signal });
  await eventually("the second ListProducts to arrive", () =>
    seen.filter((s) => s.method.rpc === "ListProducts").length === 2 ? true : undefined,
  );
  controller.abort();
  await expectStatus(t, call, Code.CANCELLED);
  const cancelled = await eventually(
    "the cancelled ListProducts to finish",
    () => seen.filter((s) => s.method.rpc === "ListProducts")[1]?.status,
  );
  t.is(cancelled.code, Code.CANCELLED);
});

test("a client middleware sees each outgoing call and its status, and can add headers", async (t) => {
  const { middleware, seen } = recorder();
  const user = await start(t, userService, { middleware: [middleware] });
  const statuses: [string, Code][] = [];
  const tagging: ClientMiddleware = {
    name: "tagging",
    wrap: (method, next) => (request, call) => {
      call.metadata.set("x-test", `from-${method.rpc}`);
      call.onFinish((status) => statuses.push([method.rpc, status.code]));
      return next(request, call);
    },
  };
  const users = createClient(UserServiceService, user.server.address, {
    middleware: [...defaultClientMiddleware({ defaultTimeoutMs: 5_000 }), asAllowedCaller, tagging],
  });
  t.teardown(() => users.close());
  // Partial requests: every field left out gets its default.
  const ada = await addUser(users);
  await users.getUser({ userId: ada.userId });
  await expectStatus(t, users.getUser({ userId: "usr_missing" }), Code.NOT_FOUND);
  t.deepEqual(statuses, [
    ["CreateUser", Code.OK],
    ["GetUser", Code.OK],
    ["GetUser", Code.NOT_FOUND],
  ]);
  t.deepEqual(
    seen.map((s) => s.header),
    ["from-CreateUser", "from-GetUser", "from-GetUser"],
  );
});

test("at log level warn, a call that failed on our side is still logged, and one that succeeded is not", async (t) => {
  const logs = { user: captureLogger("user", "warn") };
  const broken: ServerMiddleware = {
    name: "a bug in GetUser",
    wrap: (method, next) =>
      method.rpc === "GetUser"
        ? () => {
            throw new Error("a bug");
          }
        : next,
  };
  const fleet = await startFleet(t, {
    loggers: { user: logs.user.logger },
    middleware: { user: [broken] },
  });
  const shopper = await addUser(fleet.users);
  const error = await t.throwsAsync(fleet.users.getUser({ userId: shopper.userId }));
  t.is((error as ServiceError).code, Code.INTERNAL);
  const failed = await eventually("the failed GetUser's log line", () =>
    logs.user.lines.find((line) => line.method === "/shop.user.v1.UserService/GetUser"),
  );
  t.like(failed, { level: 50, code: "INTERNAL", msg: "rpc failed" });
  t.false(
    logs.user.lines.some((line) => line.method === "/shop.user.v1.UserService/CreateUser"),
    "an OK call is an info line",
  );
});

test("a refused call's log line names its reason, at info: a caller's mistake is not our failure", async (t) => {
  const logs = { user: captureLogger("user") };
  const fleet = await startFleet(t, { loggers: { user: logs.user.logger } });
  await expectStatus(
    t,
    fleet.users.getUser({ userId: "usr_missing" }),
    Code.NOT_FOUND,
    "USER_NOT_FOUND",
  );
  const refused = await eventually("the refused GetUser's log line", () =>
    logs.user.lines.find((line) => line.method === "/shop.user.v1.UserService/GetUser"),
  );
  t.like(refused, { level: 30, code: "NOT_FOUND", reason: "USER_NOT_FOUND", msg: "rpc" });
});

test("a release that undoes a refused CreateOrder, or a CancelOrder's, carries the call's x-request-id", async (t) => {
  const logs = captureLogger("product");
  const fleet = await startFleet(t, { loggers: { product: logs.logger } });
  const shopper = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 1 });
  const withId = (id: string) => {
    const metadata = new Metadata();
    metadata.set("x-request-id", id);
    return { metadata };
  };
  const releasedAs = (id: string) =>
    eventually(`the ReleaseReservation of ${id}`, () =>
      logs.lines.find(
        (line) =>
          line.method === "/shop.product.v1.InventoryService/ReleaseReservation" &&
          line.x_request_id === id,
      ),
    );
  // Short of stock: the order is written, refused, and its reservation released.
  const short = { userId: shopper.userId, lines: [orderLine(mug.productId, 2)] };
  await t.throwsAsync(fleet.orders.createOrder(short, withId("short-1")));
  t.is((await releasedAs("short-1")).code, "OK");
  const placed = { userId: shopper.userId, lines: [orderLine(mug.productId, 1)] };
  const { order } = await fleet.orders.createOrder(placed, withId("place-1"));
  await fleet.orders.cancelOrder({ orderId: order?.orderId ?? "" }, withId("cancel-1"));
  t.is((await releasedAs("cancel-1")).code, "OK");
});

test("a call made while serving another carries its x-request-id and deadline, and logs name the idempotency key", async (t) => {
  const logs = { user: captureLogger("user"), order: captureLogger("order") };
  const fleet = await startFleet(t, {
    loggers: { user: logs.user.logger, order: logs.order.logger },
  });
  const shopper = await addUser(fleet.users);
  const mug = await addProduct(fleet.products);
  const metadata = new Metadata();
  metadata.set("x-request-id", "trace-me-1");
  await fleet.orders.createOrder(
    { userId: shopper.userId, lines: [orderLine(mug.productId, 1)], requestId: "order-key-1" },
    { metadata, timeoutMs: 4_000 },
  );
  const placed = await eventually("the CreateOrder log line", () =>
    logs.order.lines.find((line) => line.method === "/shop.order.v1.OrderService/CreateOrder"),
  );
  t.like(placed, { code: "OK", x_request_id: "trace-me-1", idempotency_key: "order-key-1" });
  t.false("request_id" in placed, "the log has one request id and calls it x_request_id");
  const downstream = await eventually("the GetUser log line", () =>
    logs.user.lines.find(
      (line) =>
        line.method === "/shop.user.v1.UserService/GetUser" && line.x_request_id === "trace-me-1",
    ),
  );
  t.is(downstream.code, "OK");
  t.truthy(downstream.deadline, "the caller's deadline travelled downstream");
  t.false("idempotency_key" in downstream);

  // A 1 MB request_id is refused, and logged clipped, not whole.
  await t.throwsAsync(
    fleet.orders.createOrder({
      userId: shopper.userId,
      lines: [orderLine(mug.productId, 1)],
      requestId: "k".repeat(1_000_000),
    }),
  );
  const refused = await eventually("the refused CreateOrder's log line", () =>
    logs.order.lines.find(
      (line) =>
        line.method === "/shop.order.v1.OrderService/CreateOrder" &&
        line.code === "INVALID_ARGUMENT",
    ),
  );
  t.true(String(refused.idempotency_key).length <= 129, "clipped to 128 characters and …");
});

test("a service module's own middleware sees each call it serves and makes, after the kit's", async (t) => {
  const seen: [string, boolean, boolean][] = [];
  const watching: ClientMiddleware = {
    name: "watching",
    wrap: (method, next) => (request, call) => {
      // Inside the kit's: the x-request-id and the caller's token are already on the call.
      const has = (key: string) => call.metadata.get(key).length > 0;
      seen.push([method.rpc, has("x-request-id"), has("authorization")]);
      return next(request, call);
    },
  };
  const served = recorder();
  const user = await start(t, userService);
  const product = await start(t, createProductService());
  const order = await start(
    t,
    {
      ...createOrderService(),
      middleware: { served: [served.middleware], calls: [watching] },
    },
    { dependencies: { users: user.server.address, inventory: product.server.address } },
  );
  const { users, products, orders } = clientsFor(t, {
    user: user.server.address,
    product: product.server.address,
    order: order.server.address,
  });
  const shopper = await addUser(users);
  const mug = await addProduct(products);
  await orders.createOrder({ userId: shopper.userId, lines: [orderLine(mug.productId, 1)] });
  t.deepEqual(seen, [
    ["GetUser", true, true],
    ["ReserveStock", true, true],
  ]);
  const createOrder = await finished(served.seen, "CreateOrder");
  // Inside the kit's: the call's x-request-id is already set.
  t.truthy(createOrder.xRequestId);
  t.is(createOrder.status?.code, Code.OK);
});
