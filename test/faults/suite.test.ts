// The fault suite: CreateOrder and CancelOrder streams against real processes (user, product,
// two order replicas on one SQLite file; on PostgreSQL, suite.postgres.test.ts, two replicas of
// every service on one database), while, in turn, each process is killed with SIGKILL and
// restarted, every call gets a deadline of a few milliseconds, the two order replicas race on
// one request_id, and on PostgreSQL the server ends every connection, then restarts. Client
// mistakes are mixed in throughout. After each phase the load stops, unanswered calls are resent
// as a client would, the reservation TTL plus a reconcile interval pass, and every invariant of
// the order flow is checked. Bounded: loopback only, about a minute, and everything it starts
// is stopped.
import { setTimeout as sleep } from "node:timers/promises";
import test, { type ExecutionContext } from "ava";
import { OrderServiceService } from "../../gen/ts/shop/order/v1/order.js";
import { ProductServiceService } from "../../gen/ts/shop/product/v1/product.js";
import { UserServiceService } from "../../gen/ts/shop/user/v1/user.js";
import { type Client, createClient } from "../../kit/client/index.js";
import { connectDatabase } from "../../kit/db/index.js";
import { addProduct, addUser } from "../../scripts/lib/seed.js";
import type { ServiceName } from "../../services/registry.js";
import { testCallers } from "../helpers/credentials.js";
import { type ProcessFleet, spawnProcessFleet } from "../helpers/fleet.js";
import { onPostgres, postgres } from "../helpers/storage.js";
import { violations, type World } from "./invariants.js";
import { Ledger, type LoadOptions, runLoad, Tally } from "./load.js";
import { sendMistakes } from "./mistakes.js";

const TTL_MS = 1_500;
const RECONCILE_MS = 300;
const SWEEP_MS = 200;

interface Suite {
  fleet: ProcessFleet;
  world: World;
  ledger: Ledger;
  /** Round robin over both order replicas, as a client of the mesh dials them. */
  orders: Client<typeof OrderServiceService>;
  /** One client per order replica, for the race. */
  replicas: Client<typeof OrderServiceService>[];
  close(): void;
}

let suite: Promise<Suite> | undefined;
const totals = new Tally();
let totalViolations = 0;

/** The fleet as soon as it runs: stopped after the tests even when the setup fails later. */
let started: Awaited<ReturnType<typeof spawnProcessFleet>> | undefined;

test.before(() => {
  suite = (async () => {
    const fleet = await spawnProcessFleet({
      replicas: onPostgres() ? { user: 2, product: 2, order: 2 } : { order: 2 },
      env: {
        SHOP_RESERVATION_TTL_MS: String(TTL_MS),
        SHOP_RECONCILE_MS: String(RECONCILE_MS),
        SHOP_RESERVATION_SWEEP_MS: String(SWEEP_MS),
        SHOP_DEPENDENCY_TIMEOUT_MS: "2000",
      },
    });
    started = fleet;
    const client = <S extends Parameters<typeof createClient>[0]>(definition: S, address: string) =>
      createClient(definition, address, { middleware: testCallers(5_000) });
    const users = client(UserServiceService, fleet.plan.addresses.user.join(","));
    const products = client(ProductServiceService, fleet.plan.addresses.product.join(","));
    const orders = client(OrderServiceService, fleet.plan.addresses.order.join(","));
    const replicas = fleet.plan.addresses.order.map((address) =>
      client(OrderServiceService, address),
    );
    const shopper = await addUser(users);
    const initial = new Map<string, number>();
    for (let i = 0; i < 4; i++) {
      const product = await addProduct(products, { stock: 50_000, amountMinor: `${100 + i}` });
      initial.set(product.productId, 50_000);
    }
    const world: World = {
      orders,
      products,
      productDatabase: fleet.database("product"),
      initial,
    };
    return {
      fleet,
      world,
      ledger: new Ledger(new Tally(), shopper.userId, [...initial.keys()]),
      orders,
      replicas,
      close() {
        for (const c of [users, products, orders, ...replicas]) c.close();
      },
    };
  })();
  return suite;
});

test.after.always(async () => {
  const s = await suite?.catch(() => undefined);
  s?.close();
  await started?.stop();
});

const normalLoad: LoadOptions = {
  workers: 6,
  durationMs: 3_000,
  timeoutMs: () => 2_000,
  cancelShare: 0.3,
  resends: 3,
};

/**
 * One phase: load (and mistakes) for a while, `fault` in the middle of it, then resend what went
 * unanswered, wait TTL + reconcile interval, and check every invariant.
 */
async function phase(
  t: ExecutionContext,
  name: string,
  fault: (s: Suite) => Promise<void>,
  load: Partial<LoadOptions> = {},
  clientGivesUp = false,
) {
  const s = (await suite) as Suite;
  const tally = new Tally();
  s.ledger.tally = tally;
  // Orders to cancel from the first moment, whatever ran before.
  await Promise.all(
    Array.from({ length: 30 }, () => s.ledger.create(s.orders, s.ledger.newCreate(name), 5_000)),
  );
  const options = { ...normalLoad, ...load };
  const loading = runLoad(s.ledger, [s.orders], name, options);
  const mistakes = (async () => {
    const productId = [...s.world.initial.keys()][0] as string;
    for (let i = 0; i < 3; i++) {
      await sendMistakes(tally, s.fleet.address("order", i % 2), s.orders, productId);
      await sleep(options.durationMs / 4);
    }
  })();
  await sleep(options.durationMs / 4);
  await fault(s);
  await Promise.all([loading, mistakes]);
  if (clientGivesUp) s.ledger.abandon();
  const left = await s.ledger.settle(s.orders, 20_000);
  await sleep(TTL_MS + RECONCILE_MS + 500);
  const found = await violations(s.world, s.ledger);

  for (const [kind, byCode] of tally.counts) {
    for (const [code, n] of byCode) for (let i = 0; i < n; i++) totals.add(kind, code);
  }
  totalViolations += found.length;
  const figures = (kind: string) => {
    const { calls, ok, refused } = tally.figures(kind);
    return `${kind}: ${calls} calls, ${ok} OK, refused ${JSON.stringify(refused)}`;
  };
  t.log(`${name}: ${found.length} invariant violations, ${left} calls left unanswered`);
  for (const kind of ["CreateOrder", "CancelOrder", "mistake"]) t.log(figures(kind));
  for (const violation of found.slice(0, 20)) t.log(`violation: ${violation}`);
  t.true(tally.figures("CreateOrder").ok > 0, "some orders went through");
  t.deepEqual(found, []);
}

/** SIGKILL the given replicas of a service (all of them by default), then start them again. */
const killAndRestart = (service: ServiceName, which?: number[]) => async (s: Suite) => {
  const replicas = which ?? s.fleet.plan.addresses[service].map((_, i) => i);
  await Promise.all(replicas.map((i) => s.fleet.kill(service, i)));
  await sleep(300);
  await Promise.all(replicas.map((i) => s.fleet.restart(service, i)));
};

test.serial("kill -9 of the user process mid-load, then restart", (t) =>
  phase(t, "kill-user", killAndRestart("user")),
);

test.serial("kill -9 of the product process mid-load, then restart", (t) =>
  phase(t, "kill-product", killAndRestart("product")),
);

test.serial("kill -9 of an order replica mid-load, then restart", (t) =>
  phase(t, "kill-order", killAndRestart("order", [0])),
);

/**
 * Every connection the services hold to their database ended by the server, `times` times 300 ms
 * apart, as a failover or a pooler's restart does: statements in flight fail, pools reconnect.
 */
const cutConnections = (times: number) => async (s: Suite) => {
  const db = connectDatabase(s.fleet.database("order"));
  try {
    for (let i = 0; i < times; i++) {
      const { rows } = await db.raw(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
      );
      if (rows.length === 0) throw new Error("no connection to cut");
      await sleep(300);
    }
  } finally {
    await db.destroy();
  }
};

if (onPostgres()) {
  test.serial("every database connection cut by the server mid-load, three times", (t) =>
    phase(t, "cut-connections", cutConnections(3)),
  );

  test.serial("the database server restarts mid-load", (t) =>
    phase(t, "restart-database", async () => (await postgres()).restart()),
  );
}

// The client gives up on every cancel and on half the creates that got no answer: what the
// services did with them must add up without its help.
test.serial("deadlines of 1 to 5 ms on every create and cancel", (t) =>
  phase(
    t,
    "short-deadlines",
    async () => {},
    { timeoutMs: () => 1 + Math.floor(Math.random() * 5), cancelShare: 0.5, resends: 0 },
    true,
  ),
);

test.serial("two order replicas race one request_id, 10 calls to each at once", (t) =>
  phase(t, "replica-race", async (s) => {
    for (let round = 0; round < 10; round++) {
      const request = s.ledger.newCreate("race");
      await Promise.all(
        Array.from({ length: 20 }, async (_, i) => {
          const client = s.replicas[i % 2] as Client<typeof OrderServiceService>;
          if (!(await s.ledger.create(client, request, 3_000))) {
            s.ledger.unresolvedCreates.push(request);
          }
        }),
      );
    }
  }),
);

test.after("figures of the whole suite", (t) => {
  for (const kind of ["CreateOrder", "CancelOrder", "mistake"]) {
    const { calls, ok, refused } = totals.figures(kind);
    t.log(`${kind}: ${calls} calls, ${ok} OK, refused ${JSON.stringify(refused)}`);
  }
  t.log(`invariant violations: ${totalViolations}`);
});
