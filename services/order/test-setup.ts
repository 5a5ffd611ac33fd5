// What the OrderService handler tests share: one user and one product server per test file, the
// handlers over a fresh database per test, and shorthands for their calls. The tests
// are handlers.test.ts (CreateOrder, GetOrder, ListOrders) and cancel-watch.test.ts.
import type { ExecutionContext, TestFn } from "ava";
import {
  CreateOrderRequest,
  ListOrdersRequest,
  type Order,
} from "../../gen/ts/shop/order/v1/order.js";
import { InventoryServiceService } from "../../gen/ts/shop/product/v1/inventory.js";
import { ProductServiceService } from "../../gen/ts/shop/product/v1/product.js";
import { UserServiceService } from "../../gen/ts/shop/user/v1/user.js";
import { type Client, createClient } from "../../kit/client/index.js";
import { newId } from "../../kit/ids.js";
import { forwardCredentials } from "../../kit/middleware/auth.js";
import { createLogger } from "../../kit/observability/logger.js";
import { startService } from "../../kit/runtime/index.js";
import { callContext } from "../../test/helpers/context.js";
import { testCallers, tokenFor } from "../../test/helpers/credentials.js";
import { freshDatabase, opening, testDatabase } from "../../test/helpers/storage.js";
import { createProductService } from "../product/service.js";
import { userService } from "../user/service.js";
import { orderHandlers } from "./handlers.js";
import { OrderSaga, type SagaEvents } from "./saga/index.js";
import { OrderStore } from "./store.js";
import { OrderWatches } from "./watches.js";

export const ctx = (method: string) => callContext("shop.order.v1.OrderService", method);

/**
 * The context of a CreateOrder by `userId` itself, with its token, which the saga forwards to the
 * user service.
 */
export const placedBy = async (userId: string) =>
  callContext("shop.order.v1.OrderService", "CreateOrder", {
    caller: { userId, roles: [] },
    token: await tokenFor(userId),
  });

export const chars = (n: number, c = "x") => c.repeat(n);
export { CANCELLED, CANCELLING, CONFIRMED, FAILED, PENDING } from "./states.js";

interface Dependencies {
  users: Client<typeof UserServiceService>;
  products: Client<typeof ProductServiceService>;
  inventory: Client<typeof InventoryServiceService>;
  stop(): Promise<void>;
}

// One user and one product server for the whole file: each test makes its own users and products,
// so tests share nothing but the servers, and do not pay for starting two more each.
let shared: Promise<Dependencies> | undefined;
let sharing = false;

/**
 * Starts the user and product servers a test file's tests share, before its first test. A file
 * that runs several suites (services/handlers.postgres.test.ts) starts them once.
 */
export function shareDependencies(test: TestFn): void {
  if (sharing) return;
  sharing = true;
  test.before(() => {
    shared = (async () => {
      const options = {
        host: "127.0.0.1",
        port: 0,
        database: await freshDatabase(),
        logLevel: "silent",
        shutdownGraceMs: 2_000,
      };
      const [user, product] = await Promise.all([
        startService(userService, options),
        startService(createProductService(), options),
      ]);
      opening(user.db);
      opening(product.db);
      // As the order service's own client: the caller's token, forwarded (the test's calls sign
      // in as an admin).
      const users = createClient(UserServiceService, user.server.address, {
        middleware: [...testCallers().slice(0, -1), forwardCredentials, ...testCallers().slice(-1)],
      });
      const products = createClient(ProductServiceService, product.server.address, {
        middleware: testCallers(),
      });
      const inventory = createClient(InventoryServiceService, product.server.address);
      return {
        users,
        products,
        inventory,
        async stop() {
          users.close();
          products.close();
          inventory.close();
          await Promise.all([user.stop(), product.stop()]);
        },
      };
    })();
    return shared;
  });

  test.after.always(async () => {
    await (await shared)?.stop();
  });
}

export async function setup(t: ExecutionContext) {
  const { users, products, inventory } = (await shared) as Dependencies;
  const db = await testDatabase(t, "order");
  const store = new OrderStore({ db: db, reads: db });
  // Each replica has a saga of its own: it tells only its own watches of its changes.
  const newSaga = (events?: SagaEvents) =>
    new OrderSaga(
      store,
      { users, inventory },
      {
        reservationTtlMs: 60_000,
        placingMs: 5_000,
        logger: createLogger("order", "silent"),
        ...(events && { events }),
      },
    );
  const saga = newSaga();
  /** Handlers with their own watches, which read the store every `pollMs`. */
  const handlersOf = (ofSaga: OrderSaga, pollMs: number) => {
    const watches = new OrderWatches(store, ofSaga.changes, pollMs);
    t.teardown(() => watches.close());
    return orderHandlers(store, ofSaga, watches);
  };
  const handlers = handlersOf(saga, 50);

  const order = async (userId: string, lines: [string, number][], requestId = "") =>
    (
      await handlers.createOrder(
        CreateOrderRequest.fromPartial({
          userId,
          requestId,
          lines: lines.map(([productId, quantity]) => ({ productId, quantity })),
        }),
        await placedBy(userId),
      )
    ).order as Order;

  const stock = async (...ids: string[]) =>
    Promise.all(
      ids.map(
        async (productId) => (await products.getProduct({ productId })).product?.stockQuantity,
      ),
    );

  /** Writes an order straight to the store, as a saga does before it takes the stock. */
  const seed = async (userId: string) =>
    store.insert({
      orderId: newId("ord"),
      userId,
      idempotencyKey: newId("req"),
      reservationId: `order:${newId("x")}`,
      lines: [{ productId: "prd_seeded", quantity: 1 }],
    });

  const count = async () =>
    (
      await handlers.listOrders(
        ListOrdersRequest.fromPartial({ pageSize: 1000 }),
        ctx("ListOrders"),
      )
    ).orders.length;

  /**
   * The handlers of a second replica on the same database: it learns of what `handlers` change
   * only by polling, every `pollMs`.
   */
  const replica = (pollMs: number) => handlersOf(newSaga(), pollMs);

  return {
    db,
    store,
    saga,
    newSaga,
    handlers,
    replica,
    users,
    products,
    order,
    stock,
    seed,
    count,
  };
}

/** Every message of a WatchOrder stream until it ends. */
export async function collect(stream: AsyncIterable<{ order: Order | undefined }>) {
  const out: Order[] = [];
  for await (const message of stream) out.push(message.order as Order);
  return out;
}
