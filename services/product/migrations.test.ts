// The products schema's migrations on a database that already holds reservations, as an upgrade
// finds it; again on the other storages through services/handlers.*.test.ts.
import test, { type ExecutionContext } from "ava";
import { ReservationState } from "../../gen/ts/shop/product/v1/inventory.js";
import { emptyDatabase, migratedTo, migratorOf } from "../../test/helpers/storage.js";
import { InventoryStore, TOMBSTONE_KEEP_MS } from "./inventory/index.js";
import { ProductStore } from "./store.js";

const open = (t: ExecutionContext, location: string, upTo?: number) =>
  migratedTo(t, "product", location, upTo);

const migrator = () => migratorOf("product");

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

test("0006 marks the tombstones written before it, and only those, for the sweep; the downs of 0006 and 0005 drop their columns", async (t) => {
  const location = await emptyDatabase(t);
  const before = await open(t, location, 5);
  await before("products").insert({
    product_id: "prd_a",
    name: "a",
    description: "",
    currency_code: "EUR",
    price_minor: 100,
    stock_quantity: 10,
    create_time: 0,
    update_time: 0,
  });
  const RELEASED = ReservationState.RESERVATION_STATE_RELEASED;
  const released = (reservation_id: string) => ({
    reservation_id,
    state: RELEASED,
    expire_time: 0,
    create_time: 0,
  });
  await before("reservations").insert([released("r-tombstone"), released("r-cancelled")]);
  await before("reservation_lines").insert({
    reservation_id: "r-cancelled",
    line_no: 0,
    product_id: "prd_a",
    quantity: 1,
    currency_code: "EUR",
    unit_price_minor: 100,
  });
  await before.destroy();

  const db = await open(t, location);
  const marked = async () =>
    (await db("reservations").whereRaw("tombstone").select("reservation_id")).map(
      (row) => row.reservation_id,
    );
  t.deepEqual(await marked(), ["r-tombstone"]);
  t.is(await new InventoryStore({ db, reads: db }).forgetTombstones(TOMBSTONE_KEEP_MS + 1), 1);
  t.deepEqual(
    (await db("reservations").select("reservation_id")).map((row) => row.reservation_id),
    ["r-cancelled"],
  );

  // Down, through 0005's too, with a reservation's lines on the products table.
  await db.migrate.down(migrator());
  t.false(await db.schema.hasColumn("reservations", "tombstone"));
  await db.migrate.down(migrator());
  t.false(await db.schema.hasColumn("products", "owned_units"));
  await db.migrate.latest(migrator());
  t.deepEqual(await marked(), []);
});
