// ProductService handlers for stock reservations (ReserveStock, CommitReservation,
// ReleaseReservation, and their expiry), called directly, each test on its own in-memory
// database. The expiry tests reach the inventory store too: a timer drives it in the real service.
import test from "ava";
import type { Duration } from "../../gen/ts/google/protobuf/duration.js";
import { ReserveStockRequest } from "../../gen/ts/shop/product/v1/inventory.js";
import { UpdateProductRequest } from "../../gen/ts/shop/product/v1/product.js";
import type { Knex } from "../../kit/db/index.js";
import { Code } from "../../kit/errors.js";
import { until } from "../../test/helpers/eventually.js";
import { expectInvalid, expectStatus } from "../../test/helpers/status.js";
import { onPostgres, storage } from "../../test/helpers/storage.js";
import { inventoryHandlers } from "./inventory/handlers.js";
import { InventoryStore, TOMBSTONE_KEEP_MS } from "./inventory/index.js";
import { MAX_STOCK } from "./store.js";
import { COMMITTED, chars, ctx, EXPIRED, HELD, RELEASED, rows, setup } from "./test-setup.js";

// ReserveStock

test("ReserveStock holds every line at the current price, in request order", async (t) => {
  const { create, reserve, stock } = await setup(t);
  const a = await create({ stock: 10, amountMinor: "500" });
  const b = await create({ stock: 3, amountMinor: "250" });
  const r = await reserve("r-1", [
    [b.productId, 3],
    [a.productId, 4],
  ]);
  t.is(r.reservationId, "r-1");
  t.is(r.state, HELD);
  t.deepEqual(r.lines, [
    { productId: b.productId, quantity: 3, unitPrice: { currencyCode: "EUR", amountMinor: "250" } },
    { productId: a.productId, quantity: 4, unitPrice: { currencyCode: "EUR", amountMinor: "500" } },
  ]);
  t.is((r.expireTime?.getTime() ?? 0) - (r.createTime?.getTime() ?? 0), 60_000);
  t.deepEqual(await stock(a.productId, b.productId), [6, 0], "held units leave the stock");
});

test("ReserveStock holds 100 lines, the most a call may have, each at its own price", async (t) => {
  const { create, reserve, stock } = await setup(t);
  const products = [];
  for (let i = 0; i < 100; i++)
    products.push(await create({ stock: 5, amountMinor: `${100 + i}` }));
  const r = await reserve(
    "r-100",
    products.map((p, i) => [p.productId, 1 + (i % 5)]),
  );
  t.deepEqual(
    r.lines.map((line) => [line.productId, line.quantity, line.unitPrice?.amountMinor]),
    products.map((p, i) => [p.productId, 1 + (i % 5), `${100 + i}`]),
  );
  t.deepEqual(
    await stock(...products.map((p) => p.productId)),
    products.map((_, i) => 5 - (1 + (i % 5))),
  );
});

test("ReserveStock without a ttl holds for the default 5 minutes", async (t) => {
  const { create, reserve } = await setup(t);
  const a = await create();
  const r = await reserve("r-default", [[a.productId, 1]], "none");
  t.is((r.expireTime?.getTime() ?? 0) - (r.createTime?.getTime() ?? 0), 5 * 60_000);
  const min = await reserve("r-min", [[a.productId, 1]], { seconds: "1", nanos: 0 });
  t.is((min.expireTime?.getTime() ?? 0) - (min.createTime?.getTime() ?? 0), 1_000);
  const max = await reserve("r-max", [[a.productId, 1]], { seconds: "3600", nanos: 0 });
  t.is((max.expireTime?.getTime() ?? 0) - (max.createTime?.getTime() ?? 0), 3_600_000);
});

test("ReserveStock is all or nothing and names every short product", async (t) => {
  const { create, reserve, stock } = await setup(t);
  const a = await create({ stock: 5 });
  const b = await create({ stock: 1 });
  const c = await create({ stock: 0 });
  const error = await expectStatus(
    t,
    reserve("r-short", [
      [a.productId, 5],
      [b.productId, 2],
      [c.productId, 1],
    ]),
    Code.FAILED_PRECONDITION,
    "INSUFFICIENT_STOCK",
  );
  t.deepEqual(error?.details.preconditionViolations, [
    { type: "STOCK", subject: b.productId, description: "requested 2, 1 available" },
    { type: "STOCK", subject: c.productId, description: "requested 1, 0 available" },
  ]);
  t.deepEqual(await stock(a.productId, b.productId, c.productId), [5, 1, 0], "nothing held");

  // One short line among good ones is enough to hold nothing.
  const one = await expectStatus(
    t,
    reserve("r-short", [
      [a.productId, 1],
      [b.productId, 2],
    ]),
    Code.FAILED_PRECONDITION,
    "INSUFFICIENT_STOCK",
  );
  t.deepEqual(
    one?.details.preconditionViolations?.map((v) => v.subject),
    [b.productId],
  );
  t.deepEqual(await stock(a.productId, b.productId, c.productId), [5, 1, 0], "nothing held");

  // The failed call did not claim the id: it can still hold what is available.
  const r = await reserve("r-short", [[a.productId, 5]]);
  t.is(r.state, HELD);
  t.deepEqual(await stock(a.productId), [0]);
});

test("ReserveStock with an unknown product is NOT_FOUND and holds nothing", async (t) => {
  const { create, reserve, stock } = await setup(t);
  const a = await create({ stock: 5 });
  const error = await expectStatus(
    t,
    reserve("r-unknown", [
      [a.productId, 2],
      ["prd_missing", 1],
    ]),
    Code.NOT_FOUND,
    "PRODUCT_NOT_FOUND",
  );
  t.deepEqual(error?.details.metadata, { product_id: "prd_missing" });
  t.deepEqual(await stock(a.productId), [5]);
});

test("ReserveStock over products in two currencies is CURRENCY_MISMATCH and holds nothing", async (t) => {
  const { db, create, reserve, stock } = await setup(t);
  const eur = await create({ stock: 5, currencyCode: "EUR" });
  const usd = await create({ stock: 5, currencyCode: "USD" });
  for (const commit of [false, true]) {
    await expectStatus(
      t,
      reserve(
        "r-two-currencies",
        [
          [eur.productId, 1],
          [usd.productId, 1],
        ],
        "none",
        commit,
      ),
      Code.FAILED_PRECONDITION,
      "CURRENCY_MISMATCH",
    );
  }
  t.deepEqual(await stock(eur.productId, usd.productId), [5, 5]);
  // Refused inside the transaction: the reservation was never made, not made and given back.
  t.is(await rows(db, "reservations"), 0);
  t.is((await reserve("r-two-currencies", [[eur.productId, 5]])).state, HELD);
});

test("an INSUFFICIENT_STOCK refusal names the stock its reservation found, not what came back after", async (t) => {
  const { db, create } = await setup(t);
  const mug = await create({ stock: 1 });
  // Every read outside the reservation's transaction first sees a cancel give 4 units back.
  const cancel = () =>
    db("products").where({ product_id: mug.productId }).increment("stock_quantity", 4);
  const reads = new Proxy(db, {
    apply(target, self, args: [string]) {
      const query = Reflect.apply(target, self, args);
      if (args[0] !== "products") return query;
      return new Proxy(query, {
        get: (builder, key, receiver) =>
          key === "then"
            ? (ok: never, ko: never) => cancel().then(() => builder.then(ok, ko), ko)
            : Reflect.get(builder, key, receiver),
      });
    },
  });
  const inventory = inventoryHandlers(new InventoryStore({ db, reads }));
  const error = await expectStatus(
    t,
    inventory.reserveStock(
      ReserveStockRequest.fromPartial({
        reservationId: "r-short",
        lines: [{ productId: mug.productId, quantity: 2 }],
      }),
      ctx("ReserveStock"),
    ),
    Code.FAILED_PRECONDITION,
    "INSUFFICIENT_STOCK",
  );
  t.is(error?.details.preconditionViolations?.[0]?.description, "requested 2, 1 available");
});

test("ReserveStock repeated with the same lines returns the reservation and holds once", async (t) => {
  const { create, reserve, stock } = await setup(t);
  const a = await create({ stock: 10 });
  const b = await create({ stock: 10 });
  const lines: [string, number][] = [
    [a.productId, 2],
    [b.productId, 3],
  ];
  const first = await reserve("r-repeat", lines);
  const again = await reserve("r-repeat", lines, { seconds: "600", nanos: 0 });
  t.deepEqual(again, first, "a repeat returns the reservation unchanged, its TTL included");
  t.deepEqual(await stock(a.productId, b.productId), [8, 7]);
});

test("ReserveStock with a used id and other lines is ALREADY_EXISTS and holds nothing", async (t) => {
  const { create, reserve, stock } = await setup(t);
  const a = await create({ stock: 10 });
  const b = await create({ stock: 10 });
  await reserve("r-used", [
    [a.productId, 2],
    [b.productId, 3],
  ]);
  const others: [string, number][][] = [
    [
      [a.productId, 2],
      [b.productId, 4],
    ],
    [
      [b.productId, 3],
      [a.productId, 2],
    ],
    [[a.productId, 2]],
    [
      [a.productId, 2],
      [b.productId, 3],
      ["prd_other", 1],
    ],
  ];
  for (const lines of others) {
    const error = await expectStatus(
      t,
      reserve("r-used", lines),
      Code.ALREADY_EXISTS,
      "RESERVATION_MISMATCH",
    );
    t.deepEqual(error?.details.metadata, { reservation_id: "r-used" });
  }
  t.deepEqual(await stock(a.productId, b.productId), [8, 7]);
});

const badReservations: [string, string, [string, number][], Duration | undefined, string[]][] = [
  ["an empty reservation_id", "", [["p", 1]], undefined, ["reservation_id"]],
  ["a 65-character reservation_id", chars(65), [["p", 1]], undefined, ["reservation_id"]],
  ["no lines", "r", [], undefined, ["lines"]],
  [
    "101 lines",
    "r",
    Array.from({ length: 101 }, (_, i): [string, number] => [`p${i}`, 1]),
    undefined,
    ["lines"],
  ],
  ["a zero quantity", "r", [["p", 0]], undefined, ["lines[0].quantity"]],
  [
    "a negative quantity",
    "r",
    [
      ["p", 1],
      ["q", -3],
    ],
    undefined,
    ["lines[1].quantity"],
  ],
  ["a quantity above 10,000", "r", [["p", 10_001]], undefined, ["lines[0].quantity"]],
  ["an empty product_id", "r", [["", 1]], undefined, ["lines[0].product_id"]],
  ["a 65-character product_id", "r", [[chars(65), 1]], undefined, ["lines[0].product_id"]],
  [
    "a product twice",
    "r",
    [
      ["p", 1],
      ["q", 1],
      ["p", 2],
    ],
    undefined,
    ["lines[2].product_id"],
  ],
  ["a zero ttl", "r", [["p", 1]], { seconds: "0", nanos: 0 }, ["ttl"]],
  ["a ttl under a second", "r", [["p", 1]], { seconds: "0", nanos: 999_000_000 }, ["ttl"]],
  ["a ttl over an hour", "r", [["p", 1]], { seconds: "3601", nanos: 0 }, ["ttl"]],
  ["a ttl a nanosecond over an hour", "r", [["p", 1]], { seconds: "3600", nanos: 1 }, ["ttl"]],
  ["a negative ttl", "r", [["p", 1]], { seconds: "-60", nanos: 0 }, ["ttl"]],
];

for (const [name, reservationId, lines, ttl, fields] of badReservations) {
  test(`ReserveStock refuses ${name} and holds nothing`, async (t) => {
    const { inventory, create, stock, db } = await setup(t);
    const p = await create({ stock: 100 });
    const ids = new Map([
      ["p", p.productId],
      ["q", (await create({ stock: 100 })).productId],
    ]);
    await expectInvalid(
      t,
      inventory.reserveStock(
        ReserveStockRequest.fromPartial({
          reservationId,
          lines: lines.map(([id, quantity]) => ({ productId: ids.get(id) ?? id, quantity })),
          ttl,
        }),
        ctx("ReserveStock"),
      ),
      fields,
    );
    t.deepEqual(await stock(p.productId, ids.get("q") ?? ""), [100, 100]);
    t.is(await rows(db, "reservations"), 0);
  });
}

// On PostgreSQL a ReserveStock writes its lines, priced, before it takes the products' row locks.
if (storage() === "postgres") {
  test("ReserveStock that waits for a product's row takes the price in force when it gets it", async (t) => {
    const { db, create, reserve, stock } = await setup(t);
    const a = await create({ stock: 10, amountMinor: "500" });
    const b = await create({ stock: 10, amountMinor: "700" });
    const repricing = await db.transaction();
    t.teardown(() => repricing.rollback().catch(() => {}));
    await repricing("products").where({ product_id: a.productId }).update({ price_minor: 900 });
    const lines: [string, number][] = [
      [b.productId, 1],
      [a.productId, 2],
    ];
    const reserving = reserve("r-wait", lines);
    await until("the reservation to wait for the product's row lock", async () => {
      const { rows: waiting } = await db.raw(
        "SELECT count(*)::int AS n FROM pg_stat_activity" +
          " WHERE datname = current_database() AND wait_event_type = 'Lock'",
      );
      return waiting[0].n === 1;
    });
    await repricing.commit();
    const prices = (r: { lines: { unitPrice?: { amountMinor: string } }[] }) =>
      r.lines.map((line) => line.unitPrice?.amountMinor);
    t.deepEqual(prices(await reserving), ["700", "900"]);
    t.deepEqual(prices(await reserve("r-wait", lines)), ["700", "900"], "as stored");
    t.deepEqual(await stock(a.productId, b.productId), [8, 9]);
  });
}

// CommitReservation

test("CommitReservation makes a held reservation permanent, idempotently", async (t) => {
  const { create, reserve, commit, stock } = await setup(t);
  const a = await create({ stock: 10 });
  const held = await reserve("r-commit", [[a.productId, 4]]);
  const committed = await commit("r-commit");
  t.deepEqual(committed, { ...held, state: COMMITTED });
  t.deepEqual(await commit("r-commit"), committed, "a second commit returns it unchanged");
  t.deepEqual(await stock(a.productId), [6], "committed units stay sold");
  t.deepEqual(await reserve("r-commit", [[a.productId, 4]]), committed);
});

test("CommitReservation of an unknown id is NOT_FOUND with reason RESERVATION_NOT_FOUND", async (t) => {
  const { commit } = await setup(t);
  const error = await expectStatus(t, commit("r-missing"), Code.NOT_FOUND, "RESERVATION_NOT_FOUND");
  t.deepEqual(error?.details.metadata, { reservation_id: "r-missing" });
});

test("CommitReservation after a release is FAILED_PRECONDITION RESERVATION_NOT_HELD", async (t) => {
  const { create, reserve, commit, release, stock } = await setup(t);
  const a = await create({ stock: 10 });
  await reserve("r-released", [[a.productId, 4]]);
  await release("r-released");
  const error = await expectStatus(
    t,
    commit("r-released"),
    Code.FAILED_PRECONDITION,
    "RESERVATION_NOT_HELD",
  );
  t.deepEqual(error?.details.metadata, { reservation_id: "r-released" });
  t.deepEqual(await stock(a.productId), [10]);
  // A released tombstone of an unknown id cannot be committed either.
  await release("r-tombstone");
  await expectStatus(t, commit("r-tombstone"), Code.FAILED_PRECONDITION, "RESERVATION_NOT_HELD");
});

test("CommitReservation and ReleaseReservation refuse an empty or too long id", async (t) => {
  const { commit, release, db } = await setup(t);
  for (const id of ["", chars(65)]) {
    await expectInvalid(t, commit(id), ["reservation_id"]);
    await expectInvalid(t, release(id), ["reservation_id"]);
  }
  t.is(await rows(db, "reservations"), 0);
});

// ReleaseReservation

test("ReleaseReservation gives held units back, once", async (t) => {
  const { create, reserve, release, stock } = await setup(t);
  const a = await create({ stock: 10 });
  const b = await create({ stock: 10 });
  const held = await reserve("r-release", [
    [a.productId, 4],
    [b.productId, 1],
  ]);
  const released = await release("r-release");
  t.deepEqual(released, { ...held, state: RELEASED });
  t.deepEqual(await stock(a.productId, b.productId), [10, 10]);
  t.deepEqual(await release("r-release"), released, "a second release returns it unchanged");
  t.deepEqual(await stock(a.productId, b.productId), [10, 10], "and gives nothing back twice");
});

test("ReleaseReservation of a committed reservation returns its stock", async (t) => {
  const { create, reserve, commit, release, stock } = await setup(t);
  const a = await create({ stock: 10 });
  await reserve("r-sold", [[a.productId, 7]]);
  await commit("r-sold");
  t.deepEqual(await stock(a.productId), [3]);
  const released = await release("r-sold");
  t.is(released.state, RELEASED);
  t.deepEqual(await stock(a.productId), [10]);
  await release("r-sold");
  t.deepEqual(await stock(a.productId), [10]);
});

test("ReleaseReservation of an unknown id leaves a tombstone a late ReserveStock cannot use", async (t) => {
  const { create, reserve, release, commit, stock } = await setup(t);
  const a = await create({ stock: 10 });
  const tombstone = await release("r-late");
  t.is(tombstone.reservationId, "r-late");
  t.is(tombstone.state, RELEASED);
  t.deepEqual(tombstone.lines, []);

  const late = await reserve("r-late", [[a.productId, 3]]);
  t.deepEqual(late, tombstone, "the late reservation returns the tombstone");
  t.deepEqual(await stock(a.productId), [10], "and holds nothing");
  await expectStatus(t, commit("r-late"), Code.FAILED_PRECONDITION, "RESERVATION_NOT_HELD");
  t.deepEqual(await release("r-late"), tombstone);
});

test("a tombstone is forgotten a day after its release; a released reservation with lines is kept", async (t) => {
  const { db, inventoryStore, create, reserve, release } = await setup(t);
  const a = await create({ stock: 10 });
  await release("r-refused");
  await reserve("r-kept", [[a.productId, 1]]);
  await release("r-kept");
  t.is(await inventoryStore.forgetTombstones(Date.now() + TOMBSTONE_KEEP_MS - 60_000), 0);
  t.is(await inventoryStore.forgetTombstones(Date.now() + TOMBSTONE_KEEP_MS + 1), 1);
  // Each run reads on from the last one's cutoff: a tombstone released since is found.
  await new Promise((resolve) => setTimeout(resolve, 5));
  await release("r-refused-later");
  t.is(await inventoryStore.forgetTombstones(Date.now() + TOMBSTONE_KEEP_MS + 1), 1);
  t.deepEqual(
    (await db("reservations").select("reservation_id")).map((row) => row.reservation_id),
    ["r-kept"],
  );
});

test("the tombstone sweep works through a backlog a thousand at a time", async (t) => {
  const { db, inventoryStore, release } = await setup(t);
  for (let i = 0; i < 1_500; i++) await release(`r-many-${i}`);
  const later = Date.now() + TOMBSTONE_KEEP_MS + 1;
  t.is(await inventoryStore.forgetTombstones(later), 1_000);
  t.is(await inventoryStore.forgetTombstones(later), 500);
  t.is(await inventoryStore.forgetTombstones(later), 0);
  t.is(await rows(db, "reservations"), 0);
});

test("ReserveStock with commit takes the stock for good at once, and a release gives it back", async (t) => {
  const { inventoryStore, create, reserve, commit, release, stock } = await setup(t);
  const a = await create({ stock: 10, amountMinor: "500" });
  const sold = await reserve("r-now", [[a.productId, 4]], { seconds: "1", nanos: 0 }, true);
  t.is(sold.state, COMMITTED);
  t.is(sold.lines[0]?.unitPrice?.amountMinor, "500");
  t.deepEqual(await stock(a.productId), [6]);
  t.deepEqual(await reserve("r-now", [[a.productId, 4]], "none", true), sold, "a repeat");
  t.deepEqual(await commit("r-now"), sold, "CommitReservation returns it as it stands");
  t.is(await inventoryStore.expire(Date.now() + 3_600_000), 0, "it never expires");
  t.deepEqual(await stock(a.productId), [6]);
  t.is((await release("r-now")).state, RELEASED);
  t.deepEqual(await stock(a.productId), [10]);
});

test("ReserveStock with commit after a release of its id holds nothing", async (t) => {
  const { create, reserve, release, stock } = await setup(t);
  const a = await create({ stock: 10 });
  const tombstone = await release("r-gone");
  t.deepEqual(await reserve("r-gone", [[a.productId, 3]], "none", true), tombstone);
  t.deepEqual(await stock(a.productId), [10]);
});

test("ReserveStock with commit refused for stock holds nothing and leaves the id usable", async (t) => {
  const { create, reserve, stock } = await setup(t);
  const a = await create({ stock: 2 });
  await expectStatus(
    t,
    reserve("r-short", [[a.productId, 3]], "none", true),
    Code.FAILED_PRECONDITION,
    "INSUFFICIENT_STOCK",
  );
  t.deepEqual(await stock(a.productId), [2]);
  const fits = await reserve("r-short", [[a.productId, 2]], "none", true);
  t.is(fits.state, COMMITTED);
  t.deepEqual(await stock(a.productId), [0]);
});

// Expiry

test("expire() returns the units of held reservations past their TTL", async (t) => {
  const { db, inventoryStore, create, reserve, commit, release, stock } = await setup(t);
  const a = await create({ stock: 10 });
  const held = await reserve("r-expire", [[a.productId, 4]], { seconds: "1", nanos: 0 });
  await reserve("r-kept", [[a.productId, 1]], { seconds: "3600", nanos: 0 });
  await reserve("r-committed", [[a.productId, 2]], { seconds: "3600", nanos: 0 });
  await commit("r-committed");
  t.deepEqual(await stock(a.productId), [3]);

  const at = held.expireTime?.getTime() ?? 0;
  // Committed, then as far past its TTL as the held one: committed units never expire. (Set in
  // the table: a 1 s TTL could run out before the commit on a busy machine.)
  await db("reservations").where({ reservation_id: "r-committed" }).update({ expire_time: at });
  t.is(await inventoryStore.expire(at - 1), 0, "nothing expires before its TTL");
  t.is(await inventoryStore.expire(at + 1), 1, "only the held one past its TTL expires");
  t.deepEqual(await stock(a.productId), [7]);
  t.is(await inventoryStore.expire(at + 1), 0, "expiry happens once");

  const expired = await reserve("r-expire", [[a.productId, 4]]);
  t.deepEqual(expired, { ...held, state: EXPIRED }, "a repeat returns it as it stands");
  t.deepEqual(await stock(a.productId), [7], "without holding again");
  await expectStatus(t, commit("r-expire"), Code.FAILED_PRECONDITION, "RESERVATION_NOT_HELD");
  t.is((await release("r-expire")).state, EXPIRED, "releasing an expired one changes nothing");
  t.deepEqual(await stock(a.productId), [7]);
});

test("CommitReservation past the TTL expires the reservation instead of committing", async (t) => {
  const { inventoryStore, create, commit, stock } = await setup(t);
  const a = await create({ stock: 10 });
  // The store takes any TTL; the handler's 1s minimum would make this test wait a second.
  const held = await inventoryStore.reserve(
    "r-late-commit",
    [{ productId: a.productId, quantity: 4 }],
    1,
  );
  while (Date.now() <= (held.expireTime?.getTime() ?? 0)) await new Promise(setImmediate);
  await expectStatus(t, commit("r-late-commit"), Code.FAILED_PRECONDITION, "RESERVATION_NOT_HELD");
  t.deepEqual(await stock(a.productId), [10]);
});

// The stock bound on UpdateProduct

test("UpdateProduct bounds the stock by the product's own count, and sums its reservations only where that count is missing or near the bound", async (t) => {
  const { db, handlers, create, reserve, commit, release, stock } = await setup(t);
  const a = await create({ stock: 10 });
  await reserve("r-held", [[a.productId, 5]]);
  await reserve("r-sold", [[a.productId, 2]]);
  await commit("r-sold");
  const setStock = (stockQuantity: number) =>
    handlers.updateProduct(
      UpdateProductRequest.fromPartial({
        product: { productId: a.productId, stockQuantity },
        updateMask: ["stock_quantity"],
      }),
      ctx("UpdateProduct"),
    );
  const readsOfLines: string[] = [];
  db.on("query", ({ sql }: { sql: string }) => {
    if (/reservation_lines/.test(sql)) readsOfLines.push(sql);
  });
  const owned = async () =>
    Number((await db("products").where({ product_id: a.productId }).first()).owned_units);

  await setStock(500_000_000);
  t.deepEqual(readsOfLines, [], "a count far from the bound is trusted");
  t.is(await owned(), 500_000_007);

  // As a build before the count left the row: summed once, and counted from then on.
  await db("products")
    .where({ product_id: a.productId })
    .update({ owned_units: null, counted_stock: null });
  await setStock(600_000_000);
  t.is(readsOfLines.length, 1);
  t.is(await owned(), 600_000_007);

  // A build before the count restocks past it (by less than the units out, so the count would
  // still look possible): it is not trusted, and summed again.
  await db("products").where({ product_id: a.productId }).update({ stock_quantity: 600_000_003 });
  readsOfLines.length = 0;
  await setStock(600_000_000);
  t.is(readsOfLines.length, 1);
  t.is(await owned(), 600_000_007);

  // Units coming back move between stock and the rest: the count stays.
  await release("r-held");
  t.deepEqual(await stock(a.productId), [600_000_005]);
  t.is(await owned(), 600_000_007);

  // Near the bound the reservations are summed again: the 2 sold units may come back.
  readsOfLines.length = 0;
  await setStock(MAX_STOCK - 2);
  await expectStatus(t, setStock(MAX_STOCK - 1), Code.FAILED_PRECONDITION, "STOCK_LIMIT_EXCEEDED");
  t.deepEqual(await stock(a.productId), [MAX_STOCK - 2]);
  t.is(readsOfLines.length, 2);
});

test("the tombstone sweep reads only tombstones, however many cancelled orders came first", async (t) => {
  const { db, inventoryStore, create, release } = await setup(t);
  const a = await create({ stock: 10 });
  // Released with lines, as cancelled orders leave them: kept for good, and never read again.
  const kept = Array.from({ length: 2_500 }, (_, i) => ({
    reservation_id: `r-cancelled-${i}`,
    state: RELEASED,
    expire_time: Date.now() - 1_000,
    create_time: 0,
  }));
  await db.batchInsert("reservations", kept, 500);
  await db.batchInsert(
    "reservation_lines",
    kept.map(({ reservation_id }) => ({
      reservation_id,
      line_no: 0,
      product_id: a.productId,
      quantity: 1,
      currency_code: "EUR",
      unit_price_minor: 100,
    })),
    500,
  );
  for (const id of ["r-refused", "r-refused-2", "r-refused-3"]) await release(id);
  let mostRows = 0;
  const statements: { sql: string; bindings: Knex.RawBinding[] }[] = [];
  const seen = (query: { sql: string; bindings: Knex.RawBinding[] }) => statements.push(query);
  const rowsOf = (response: unknown) => {
    if (Array.isArray(response)) mostRows = Math.max(mostRows, response.length);
  };
  db.on("query", seen).on("query-response", rowsOf);
  const later = Date.now() + TOMBSTONE_KEEP_MS + 1;
  // A restarted process too: nothing to read past first.
  const restarted = new InventoryStore({ db, reads: db });
  const runs = [await inventoryStore.forgetTombstones(later)];
  runs.push(await restarted.forgetTombstones(later));
  db.off("query", seen).off("query-response", rowsOf);
  t.deepEqual(runs, [3, 0]);
  t.true(mostRows <= 3, `one statement returned ${mostRows} rows`);
  t.is(await rows(db, "reservations"), 2_500);
  if (onPostgres()) return;
  // SQLite's plans: the tombstones by their index, and their DELETE by primary key, not a walk
  // of every released reservation through the state index.
  const plans = await Promise.all(
    statements
      .slice(0, 2)
      .map(({ sql, bindings }) => db.raw(`EXPLAIN QUERY PLAN ${sql}`, bindings)),
  );
  t.regex(JSON.stringify(plans[0]), /reservations_tombstone_index/);
  t.regex(JSON.stringify(plans[1]), /sqlite_autoindex_reservations_1|PRIMARY KEY/);
  t.notRegex(JSON.stringify(plans), /reservations_state_expire_time_index/);
});
