import type { Migration } from "../../../kit/db/index.js";
import { createOrders } from "./0001_create_orders.js";
import { requestKeyPerUser } from "./0002_request_key_per_user.js";
import { cancelTime } from "./0003_cancel_time.js";
import { confirmTime } from "./0004_confirm_time.js";
import { withdrawn } from "./0005_withdrawn.js";
import { withdrawnIndex } from "./0006_withdrawn_index.js";
import { reconcileLease } from "./0007_reconcile_lease.js";
import { stateStatistics } from "./0008_state_statistics.js";

/** In order; never edit one that has shipped, add the next. */
export const migrations: Migration[] = [
  createOrders,
  requestKeyPerUser,
  cancelTime,
  confirmTime,
  withdrawn,
  withdrawnIndex,
  reconcileLease,
  stateStatistics,
];
