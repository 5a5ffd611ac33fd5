import type { Migration } from "../../../kit/db/index.js";

/** UpdateProduct sums a product's outstanding reserved units: find its lines without a scan. */
export const indexReservationLinesProduct: Migration = {
  name: "0003_index_reservation_lines_product",
  async up(db) {
    await db.schema.alterTable("reservation_lines", (table) => {
      table.index(["product_id"], "reservation_lines_product_id_index");
    });
  },
  async down(db) {
    await db.schema.alterTable("reservation_lines", (table) => {
      table.dropIndex(["product_id"], "reservation_lines_product_id_index");
    });
  },
};
