import type { Metrics } from "../../kit/observability/metrics.js";
import type { InventoryStore } from "./inventory/index.js";

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
 * store at each scrape, so every replica sharing a database reports the same figure (NaN when
 * the read fails); `shop_reservations_expired_total` and
 * `shop_reservation_expiry_failures_total`, counted by the sweep that did the work.
 */
export function reservationMetrics(metrics: Metrics, store: InventoryStore): ReservationMetrics {
  // One read serves the three gauges of a scrape. One that fails leaves them NaN (unknown):
  // thrown, it would fail the whole scrape, and every other series with it, during the very
  // database outage the rest of them describe.
  type Held = Awaited<ReturnType<InventoryStore["held"]>>;
  let reading: Promise<Held | undefined> | undefined;
  const held = () => {
    reading ??= store
      .held()
      .catch(() => undefined)
      .finally(() => {
        reading = undefined;
      });
    return reading;
  };
  const gauge = (name: string, help: string, value: (now: Held) => number) =>
    metrics.gauge({
      name,
      help,
      async collect() {
        const now = await held();
        this.set(now === undefined ? Number.NaN : value(now));
      },
    });
  gauge(
    "shop_reservations_held",
    "Reservations holding stock now, not yet committed, released or expired.",
    ({ count }) => count,
  );
  gauge(
    "shop_reservation_oldest_held_seconds",
    "Age of the oldest reservation still held; 0 when none is.",
    ({ oldest }) => (oldest === undefined ? 0 : Math.max(0, (Date.now() - oldest) / 1000)),
  );
  gauge(
    "shop_reservation_overdue_seconds",
    "How long the held reservation longest past its expiry has been past it; 0 when none is.",
    ({ firstDue }) => (firstDue === undefined ? 0 : Math.max(0, (Date.now() - firstDue) / 1000)),
  );
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
