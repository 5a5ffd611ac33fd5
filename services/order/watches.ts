import type { EventEmitter } from "node:events";
import type { OrderState } from "../../gen/ts/shop/order/v1/order.js";
import type { OrderStore } from "./store.js";

interface Waiter {
  /** The state the watch last sent. */
  state: OrderState;
  wake(): void;
}

/**
 * What this process's WatchOrder calls wait for. This process's own changes wake a watch at once
 * (the saga's `changes`); another replica's are found by a poll every `pollMs` that reads the
 * state of every watched order in one query (500 to a query), not each watch its own.
 */
export class OrderWatches {
  private readonly waiting = new Map<string, Set<Waiter>>();
  private timer: NodeJS.Timeout | undefined;
  private polling: Promise<void> | undefined;
  private closed = false;

  constructor(
    private readonly store: OrderStore,
    private readonly changes: EventEmitter,
    private readonly pollMs: number,
  ) {}

  /**
   * Resolves when the order may have left `state`: this process changed it, a poll read it in
   * another state or gone (or could not read it; the watch's own read then says why), or the
   * call ended.
   */
  changeFrom(orderId: string, state: OrderState, signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      if (signal.aborted) return resolve();
      const waiters = this.waiting.get(orderId) ?? new Set<Waiter>();
      const waiter: Waiter = {
        state,
        wake: () => {
          waiters.delete(waiter);
          if (waiters.size === 0 && this.waiting.get(orderId) === waiters) {
            this.waiting.delete(orderId);
          }
          this.changes.off(orderId, waiter.wake);
          signal.removeEventListener("abort", waiter.wake);
          resolve();
        },
      };
      waiters.add(waiter);
      this.waiting.set(orderId, waiters);
      this.changes.on(orderId, waiter.wake);
      signal.addEventListener("abort", waiter.wake, { once: true });
      this.schedule();
    });
  }

  /** Stops polling, once a poll under way has ended, so the database can close. */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    await this.polling;
  }

  /** The next poll, while any watch waits. */
  private schedule() {
    if (this.timer || this.polling || this.closed || this.waiting.size === 0) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.polling = this.poll().finally(() => {
        this.polling = undefined;
        this.schedule();
      });
    }, this.pollMs);
  }

  private async poll() {
    const ids = [...this.waiting.keys()];
    const states = await this.store.states(ids).catch(() => undefined);
    for (const id of ids) {
      for (const waiter of this.waiting.get(id) ?? []) {
        if (states?.get(id) !== waiter.state) waiter.wake();
      }
    }
  }
}
