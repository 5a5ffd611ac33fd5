// Waiting on a condition instead of sleeping: polls until the probe gives a value, or fails with
// what it was waiting for and what it saw last.

export interface EventuallyOptions {
  /** 10 s by default. */
  timeoutMs?: number;
  /** How long between tries; 50 ms by default. */
  intervalMs?: number;
}

/**
 * Resolves with the first value `probe` returns that is not undefined. A probe that throws counts
 * as not there yet; at the deadline the wait rejects naming `what` and the last error or value.
 */
export async function eventually<T>(
  what: string,
  probe: () => T | undefined | Promise<T | undefined>,
  options: EventuallyOptions = {},
): Promise<T> {
  const deadline = Date.now() + (options.timeoutMs ?? 10_000);
  let last: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
      last = undefined;
    } catch (error) {
      last = error;
    }
    if (Date.now() >= deadline) {
      const seen = last instanceof Error ? `: ${last.message}` : "";
      throw new Error(`gave up waiting for ${what} after ${options.timeoutMs ?? 10_000} ms${seen}`);
    }
    await new Promise((resolve) => setTimeout(resolve, options.intervalMs ?? 50));
  }
}

/** Resolves once `condition` holds (see eventually). */
export const until = (
  what: string,
  condition: () => boolean | Promise<boolean>,
  options?: EventuallyOptions,
) => eventually(what, async () => ((await condition()) ? true : undefined), options);
