// The fault suite's client side: streams of CreateOrder and CancelOrder calls that behave as a
// careful client does (a request_id per order, the same id and body resent after a retryable
// answer), a ledger of what the services acknowledged, and the tally of every answer.
import { setTimeout as sleep } from "node:timers/promises";
import {
  type Order,
  type OrderServiceService,
  OrderState,
} from "../../gen/ts/shop/order/v1/order.js";
import type { Client } from "../../kit/client/index.js";
import { Code, ServiceError } from "../../kit/errors.js";
import { orderLine } from "../helpers/fleet.js";

/** Answers a client should resend on, with the same request_id and body. */
export const RETRYABLE = new Set(["UNAVAILABLE", "DEADLINE_EXCEEDED", "ABORTED", "CANCELLED"]);

/** Counts of answers by code name, per kind of call. */
export class Tally {
  readonly counts = new Map<string, Map<string, number>>();

  add(kind: string, code: string): void {
    const byCode = this.counts.get(kind) ?? new Map<string, number>();
    byCode.set(code, (byCode.get(code) ?? 0) + 1);
    this.counts.set(kind, byCode);
  }

  /** Calls, OK, and refusals by code, for one kind or all kinds. */
  figures(kind?: string): { calls: number; ok: number; refused: Record<string, number> } {
    let calls = 0;
    let ok = 0;
    const refused: Record<string, number> = {};
    for (const [k, byCode] of this.counts) {
      if (kind && k !== kind) continue;
      for (const [code, n] of byCode) {
        calls += n;
        if (code === "OK") ok += n;
        else refused[code] = (refused[code] ?? 0) + n;
      }
    }
    return { calls, ok, refused };
  }

  /** How many answers carried one of `codes`. */
  count(...codes: string[]): number {
    let n = 0;
    for (const byCode of this.counts.values()) for (const c of codes) n += byCode.get(c) ?? 0;
    return n;
  }
}

export interface PlacedOrder {
  order: Order;
  /** Set once a CancelOrder of it answered OK. */
  cancelled: boolean;
  /** Set when a CancelOrder of it got no answer and the client gave up: either end is right. */
  cancelAbandoned?: boolean;
}

interface CreateRequest {
  userId: string;
  lines: ReturnType<typeof orderLine>[];
  requestId: string;
}

/** What the client knows: every request, what was acknowledged, what is still unanswered. */
export class Ledger {
  /** Acknowledged orders by order id. */
  readonly placed = new Map<string, PlacedOrder>();
  /** Creates and cancels that got no definitive answer yet; resent by settle(). */
  readonly unresolvedCreates: CreateRequest[] = [];
  readonly unresolvedCancels = new Set<string>();
  /** OK answers that broke the contract at once (an OK CreateOrder not CONFIRMED, say). */
  readonly badAnswers: string[] = [];
  private serial = 0;

  constructor(
    /** Where answers are counted; a phase of the suite swaps in its own. */
    public tally: Tally,
    private readonly userId: string,
    private readonly productIds: string[],
  ) {}

  newCreate(tag: string): CreateRequest {
    const n = this.serial++;
    const first = n % this.productIds.length;
    const lines = [orderLine(this.productIds[first] as string, 1 + (n % 3))];
    if (n % 4 === 0) {
      const second = (first + 1) % this.productIds.length;
      lines.push(orderLine(this.productIds[second] as string, 1));
    }
    return { userId: this.userId, lines, requestId: `${tag}-${n}` };
  }

  /** One CreateOrder; true when it ended with a definitive answer. */
  async create(
    orders: Client<typeof OrderServiceService>,
    request: CreateRequest,
    timeoutMs: number,
  ): Promise<boolean> {
    try {
      const { order } = await orders.createOrder(request, { timeoutMs });
      this.tally.add("CreateOrder", "OK");
      if (order?.state !== OrderState.ORDER_STATE_CONFIRMED) {
        this.badAnswers.push(`CreateOrder OK with state ${OrderState[order?.state ?? 0]}`);
      }
      if (order && !this.placed.has(order.orderId)) {
        this.placed.set(order.orderId, { order, cancelled: false });
      }
      return true;
    } catch (error) {
      const code = codeOf(error);
      this.tally.add("CreateOrder", code);
      return !RETRYABLE.has(code);
    }
  }

  /** One CancelOrder; true when it ended with a definitive answer. */
  async cancel(
    orders: Client<typeof OrderServiceService>,
    orderId: string,
    timeoutMs: number,
  ): Promise<boolean> {
    try {
      const { order } = await orders.cancelOrder({ orderId }, { timeoutMs });
      this.tally.add("CancelOrder", "OK");
      if (order?.state !== OrderState.ORDER_STATE_CANCELLED) {
        this.badAnswers.push(`CancelOrder OK with state ${OrderState[order?.state ?? 0]}`);
      }
      const placed = this.placed.get(orderId);
      if (placed) placed.cancelled = true;
      return true;
    } catch (error) {
      const code = codeOf(error);
      this.tally.add("CancelOrder", code);
      // Every order this client cancels was acknowledged as CONFIRMED: only a retryable
      // refusal is acceptable.
      if (!RETRYABLE.has(code)) this.badAnswers.push(`CancelOrder of ${orderId}: ${code}`);
      return !RETRYABLE.has(code);
    }
  }

  /** A confirmed order not yet cancelled and not being cancelled, if any. */
  pickCancellable(): string | undefined {
    for (const [orderId, placed] of this.placed) {
      if (placed.cancelled || placed.cancelAbandoned || this.unresolvedCancels.has(orderId)) {
        continue;
      }
      return orderId;
    }
    return undefined;
  }

  /**
   * Gives up on every unanswered cancel and on every other unanswered create, as a client that
   * goes away would: whatever the services did with them must still add up.
   */
  abandon(): void {
    for (const orderId of this.unresolvedCancels) {
      const placed = this.placed.get(orderId);
      if (placed) placed.cancelAbandoned = true;
    }
    this.unresolvedCancels.clear();
    const creates = this.unresolvedCreates.splice(0);
    this.unresolvedCreates.push(...creates.filter((_, i) => i % 2 === 0));
  }

  /**
   * Resends every unanswered create and cancel, same id and body, with a sane deadline, until
   * each gets a definitive answer or `timeoutMs` passes. Returns how many are left.
   */
  async settle(orders: Client<typeof OrderServiceService>, timeoutMs: number): Promise<number> {
    const until = Date.now() + timeoutMs;
    while (
      (this.unresolvedCreates.length > 0 || this.unresolvedCancels.size > 0) &&
      Date.now() < until
    ) {
      const creates = this.unresolvedCreates.splice(0);
      const answered = await Promise.all(creates.map((r) => this.create(orders, r, 3_000)));
      creates.forEach((request, i) => {
        if (!answered[i]) this.unresolvedCreates.push(request);
      });
      for (const orderId of [...this.unresolvedCancels]) {
        if (await this.cancel(orders, orderId, 3_000)) this.unresolvedCancels.delete(orderId);
      }
      if (this.unresolvedCreates.length > 0 || this.unresolvedCancels.size > 0) await sleep(200);
    }
    return this.unresolvedCreates.length + this.unresolvedCancels.size;
  }
}

export const codeOf = (error: unknown): string =>
  error instanceof ServiceError ? (Code[error.code] ?? String(error.code)) : "CLIENT_ERROR";

export interface LoadOptions {
  /** Concurrent workers, each one call at a time. */
  workers: number;
  durationMs: number;
  /** Deadline of each call. */
  timeoutMs: () => number;
  /** How often a worker cancels instead of creating, from 0 to 1. */
  cancelShare: number;
  /** Resends of a call after a retryable answer, before it is left to settle(). */
  resends: number;
}

/**
 * Runs `workers` loops for `durationMs` against the order clients (round robin over them):
 * creates, and cancels of acknowledged orders, each resent after a retryable answer.
 */
export async function runLoad(
  ledger: Ledger,
  clients: Client<typeof OrderServiceService>[],
  tag: string,
  options: LoadOptions,
): Promise<void> {
  const until = Date.now() + options.durationMs;
  let turn = 0;
  const next = () => clients[turn++ % clients.length] as Client<typeof OrderServiceService>;
  await Promise.all(
    Array.from({ length: options.workers }, async (_, worker) => {
      for (let i = 0; Date.now() < until; i++) {
        const orderId = (i + worker) % 10 < options.cancelShare * 10 && ledger.pickCancellable();
        if (orderId) {
          ledger.unresolvedCancels.add(orderId);
          for (let attempt = 0; attempt <= options.resends; attempt++) {
            if (await ledger.cancel(next(), orderId, options.timeoutMs())) {
              ledger.unresolvedCancels.delete(orderId);
              break;
            }
            await sleep(50 * (attempt + 1));
          }
          continue;
        }
        const request = ledger.newCreate(tag);
        let answered = false;
        for (let attempt = 0; attempt <= options.resends && !answered; attempt++) {
          answered = await ledger.create(next(), request, options.timeoutMs());
          if (!answered) await sleep(50 * (attempt + 1));
        }
        if (!answered) ledger.unresolvedCreates.push(request);
      }
    }),
  );
}
