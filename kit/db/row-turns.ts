// A write that waits for a row lock holds one of its process's pooled connections meanwhile. When
// many writes want one row at once (a product in a sale), they would take every connection of the
// pool, and writes to any other row would queue behind them. Turns keep that queue in the process
// instead, where it holds nothing: at most two writes per row go to the database at a time, the one
// that holds the lock and the next, whose first statements are done by the time it is let go.

/** A write that waited too long for its turn at a row; kit/db/index.ts isBusy counts it as busy. */
export class NoTurn extends Error {
  constructor(key: string, waitedMs: number) {
    super(`waited ${waitedMs} ms for a turn at the busy row ${key}`);
    this.name = "NoTurn";
  }
}

/** A write whose caller went away while it waited for its turn: it did not run. */
export class CallerGone extends Error {
  constructor(key: string) {
    super(`the caller went away while its write waited for a turn at the busy row ${key}`);
    this.name = "CallerGone";
  }
}

interface Turns {
  running: number;
  /** Each waiter's wake-up, first come first served. */
  waiting: (() => void)[];
}

export class RowTurns {
  private readonly rows = new Map<string, Turns>();

  /**
   * `width` writes per row at a time; a write waits for its turn up to `maxWaitMs`, as long as it
   * would wait for a pooled connection (db/postgres.ts), then fails with NoTurn.
   */
  constructor(
    private readonly width = 2,
    private readonly maxWaitMs = 5_000,
  ) {}

  /**
   * Runs `write` once it has a turn at each of `keys`. Keys are taken in sorted order, so that two
   * writes never wait for each other's turns. A write whose caller goes away while it waits (its
   * deadline passed, it cancelled) leaves the queue and never runs. `callerSignal` gives the
   * call's signal, asked for only when the write must wait: making one costs a cheap rpc.
   */
  async run<T>(
    keys: readonly string[],
    write: () => Promise<T>,
    callerSignal?: () => AbortSignal,
  ): Promise<T> {
    const taken: string[] = [];
    try {
      for (const key of [...new Set(keys)].sort()) {
        await this.take(key, callerSignal);
        taken.push(key);
      }
      return await write();
    } finally {
      for (const key of taken) this.give(key);
    }
  }

  private take(key: string, callerSignal?: () => AbortSignal): Promise<void> | undefined {
    let turns = this.rows.get(key);
    if (!turns) {
      turns = { running: 0, waiting: [] };
      this.rows.set(key, turns);
    }
    if (turns.running < this.width) {
      turns.running++;
      return undefined;
    }
    const { waiting } = turns;
    const signal = callerSignal?.();
    if (signal?.aborted) return Promise.reject(new CallerGone(key));
    return new Promise((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", gone);
      };
      const wake = () => {
        done();
        resolve();
      };
      const leave = (error: Error) => {
        done();
        waiting.splice(waiting.indexOf(wake), 1);
        reject(error);
      };
      const gone = () => leave(new CallerGone(key));
      const timer = setTimeout(() => leave(new NoTurn(key, this.maxWaitMs)), this.maxWaitMs);
      signal?.addEventListener("abort", gone, { once: true });
      waiting.push(wake);
    });
  }

  /** Hands the turn to the next waiter, if any. */
  private give(key: string) {
    const turns = this.rows.get(key) as Turns;
    const next = turns.waiting.shift();
    if (next) next();
    else if (--turns.running === 0) this.rows.delete(key);
  }
}
