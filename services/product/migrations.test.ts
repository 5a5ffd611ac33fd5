// The products schema's migrations on a database that already holds reservations, as an upgrade
// finds it; again on the other storages through services/handlers.*.test.ts.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import test, { type ExecutionContext } from "ava";
import { ReservationState } from "../../gen/ts/shop/product/v1/inventory.js";
import { openDatabase } from "../../kit/db/index.js";
import { createLogger } from "../../kit/observability/logger.js";
import { onPostgres, opening, postgres } from "../../test/helpers/storage.js";
import { migrations } from "./migrations/index.js";
import { ProductStore } from "./store.js";

let databases = 0;

/** A database without the products schema: an SQLite file, or a new PostgreSQL database. */
async function emptyDatabase(t: ExecutionContext): Promise<string> {
  if (onPostgres()) {
    const pg = await postgres();
    const name = `product_migrations_${++databases}`;
    await pg.createDatabase(name);
    return pg.url(name);
  }
  const dir = await mkdtemp(path.join(tmpdir(), "shopmesh-product-migrations-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return path.join(dir, "product.sqlite");
}

const logger = createLogger("product", "silent");

const open = async (t: ExecutionContext, location: string, upTo = migrations.length) => {
  const db = opening(
    await openDatabase(location, migrations.slice(0, upTo), { schema: "product", logger }),
  );
  t.teardown(() => db.destroy());
  return db;
};

test("0005 reads nothing; a product's first stock change counts its own units from its held and committed reservations", async (t) => {
  const location = await emptyDatabase(t);
  const before = await open(t, location, 4);
  const product = (product_id: string, stock_quantity: number) => ({
    product_id,
    name: product_id,
    description: "",
    currency_code: "EUR",
    price_minor: 100,
    stock_quantity,
    create_time: 0,
    update_time: 0,
  });
  await before("products").insert([product("prd_a", 10), product("prd_b", 5), product("prd_c", 7)]);
  const { HELD, COMMITTED, RELEASED, EXPIRED } = {
    HELD: ReservationState.RESERVATION_STATE_HELD,
    COMMITTED: ReservationState.RESERVATION_STATE_COMMITTED,
    RELEASED: ReservationState.RESERVATION_STATE_RELEASED,
    EXPIRED: ReservationState.RESERVATION_STATE_EXPIRED,
  };
  const reservations: [string, number, [string, number][]][] = [
    ["r-held", HELD, [["prd_a", 3]]],
    [
      "r-sold",
      COMMITTED,
      [
        ["prd_a", 2],
        ["prd_b", 1],
      ],
    ],
    ["r-released", RELEASED, [["prd_a", 4]]],
    ["r-expired", EXPIRED, [["prd_b", 2]]],
  ];
  for (const [reservation_id, state, lines] of reservations) {
    await before("reservations").insert({ reservation_id, state, expire_time: 0, create_time: 0 });
    await before("reservation_lines").insert(
      lines.map(([product_id, quantity], line_no) => ({
        reservation_id,
        line_no,
        product_id,
        quantity,
        currency_code: "EUR",
        unit_price_minor: 100,
      })),
    );
  }
  await before.destroy();

  const db = await open(t, location);
  const owned = async () =>
    Object.fromEntries(
      (await db("products").select("product_id", "owned_units")).map((row) => [
        row.product_id,
        row.owned_units === null ? null : Number(row.owned_units),
      ]),
    );
  t.deepEqual(await owned(), { prd_a: null, prd_b: null, prd_c: null });
  const store = new ProductStore({ db, reads: db });
  for (const [productId, stockQuantity] of [
    ["prd_a", 10],
    ["prd_b", 50],
    ["prd_c", 7],
  ] as const) {
    await store.update(productId, { stockQuantity });
  }
  t.deepEqual(await owned(), { prd_a: 15, prd_b: 51, prd_c: 7 });
});
