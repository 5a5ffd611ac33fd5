import type { Metrics } from "../../kit/metrics.js";
import type { InventoryStore } from "./inventory-store.js";

/** What the product service counts about its reservations, beyond what the kit counts. */
export interface ReservationMetrics {
  /** The sweep expired `count` reservations. */
  expired(count: number): void;
  /** One reservation could not expire (it stays held; the next sweep tries again). */
  expiryFailed(): void;
}

/**
 * The reservations' business metrics: `shop_reservations_held`,
 * `shop_reservation_oldest_held_seconds` and `shop_reservation_overdue_seconds`, read from the
 * store at each scrape, so every replica sharing a database reports the same figure; `shop_reservations_expired_total` and
 * `shop_reservation_expiry_failures_total`, counted by the sweep that did the work.
 */
export function reservationMetrics(metrics: Metrics, store: InventoryStore): ReservationMetrics {
  // One read serves the three gauges of a scrape.
  let reading: ReturnType<InventoryStore["held"]> | undefined;
  const held = () => {
    reading ??= store.held().finally(() => {
      reading = undefined;
    });
    return reading;
  };
  metrics.gauge({
    name: "shop_reservations_held",
    help: "Reservations holding stock now, not yet committed, released or expired.",
    async collect() {
      this.set((await held()).count);
    },
  });
  metrics.gauge({
    name: "shop_reservation_oldest_held_seconds",
    help: "Age of the oldest reservation still held; 0 when none is.",
    async collect() {
      const { oldest } = await held();
      this.set(oldest === undefined ? 0 : Math.max(0, (Date.now() - oldest) / 1000));
    },
  });
  metrics.gauge({
    name: "shop_reservation_overdue_seconds",
    help: "How long the held reservation longest past its expiry has been past it; 0 when none is.",
    async collect() {
      const { firstDue } = await held();
      this.set(firstDue === undefined ? 0 : Math.max(0, (Date.now() - firstDue) / 1000));
    },
  });
  const expired = metrics.counter({
    name: "shop_reservations_expired_total",
    help: "Held reservations the sweep expired past their TTL, their units back in stock.",
  });
  const failures = metrics.counter({
    name: "shop_reservation_expiry_failures_total",
    help: "Attempts to expire one reservation that failed; it stays held until a later sweep.",
  });
  return {
    expired: (count) => expired.inc(count),
    expiryFailed: () => failures.inc(),
  };
}
