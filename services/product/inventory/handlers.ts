// InventoryService, the order service's internal API: each rpc validates its request, then asks
// the inventory store.
import type { Duration } from "../../../gen/ts/google/protobuf/duration.js";
import type { InventoryServiceService } from "../../../gen/ts/shop/product/v1/inventory.js";
import type { Handlers } from "../../../kit/service.js";
import { check, durationMs, type Violations } from "../../../kit/validate.js";
import type { InventoryStore } from "./index.js";

const DEFAULT_TTL_MS = 5 * 60_000;

function ttlMs(v: Violations, ttl: Duration | undefined): number {
  if (!ttl) return DEFAULT_TTL_MS;
  const ms = durationMs(v, "ttl", ttl);
  if (ms === undefined) return 0;
  // ms drops what is under a millisecond: 1h and 1ns is 3,600,000 too.
  const overAnHour = ms > 3_600_000 || (ms === 3_600_000 && ttl.nanos > 0);
  if (ms < 1000 || overAnHour) v.add("ttl", "must be between 1s and 1h");
  return ms;
}

/** InventoryService, the order service's internal API: reservations of stock. */
export function inventoryHandlers(store: InventoryStore): Handlers<typeof InventoryServiceService> {
  return {
    async reserveStock({ reservationId, lines, ttl, commit }, ctx) {
      const v = check().id("reservation_id", reservationId);
      if (lines.length === 0 || lines.length > 100) v.add("lines", "must hold 1 to 100 lines");
      const seen = new Set<string>();
      lines.forEach((line, i) => {
        v.id(`lines[${i}].product_id`, line.productId);
        v.range(`lines[${i}].quantity`, line.quantity, 1, 10_000);
        if (seen.has(line.productId)) v.add(`lines[${i}].product_id`, "appears twice");
        seen.add(line.productId);
      });
      const ms = ttlMs(v, ttl);
      v.throwIfAny();
      const reservation = await store.reserve(reservationId, lines, ms, commit, () => ctx.signal);
      return { reservation };
    },

    async commitReservation({ reservationId }) {
      check().id("reservation_id", reservationId).throwIfAny();
      return { reservation: await store.commit(reservationId) };
    },

    async releaseReservation({ reservationId }, ctx) {
      check().id("reservation_id", reservationId).throwIfAny();
      return { reservation: await store.release(reservationId, () => ctx.signal) };
    },
  };
}
