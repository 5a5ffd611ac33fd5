import type { Migration } from "../../../kit/db/index.js";
import { createProducts } from "./0001_create_products.js";
import { createReservations } from "./0002_create_reservations.js";
import { indexReservationLinesProduct } from "./0003_index_reservation_lines_product.js";
import { deferLineProductCheck } from "./0004_defer_line_product_check.js";
import { ownedUnits } from "./0005_owned_units.js";
import { tombstoneFlag } from "./0006_tombstone_flag.js";

/** In order; never edit one that has shipped, add the next. */
export const migrations: Migration[] = [
  createProducts,
  createReservations,
  indexReservationLinesProduct,
  deferLineProductCheck,
  ownedUnits,
  tombstoneFlag,
];
