/** A background task run every `ms`, never two at once. */
export interface Repeating {
  /** Stops the timer and waits for a run in progress, so the database can close after it. */
  stop(): Promise<void>;
}

/** Told of every run of a background task: how long it took and whether it failed. */
export interface RunObserver {
  ran(seconds: number, failed: boolean): void;
}

export function repeat(
  ms: number,
  task: () => Promise<void>,
  onError: (error: unknown) => void,
  observer?: RunObserver,
): Repeating {
  let running: Promise<void> | undefined;
  const timer = setInterval(() => {
    const started = performance.now();
    running ??= task()
      .then(
        () => observer?.ran((performance.now() - started) / 1000, false),
        (error: unknown) => {
          observer?.ran((performance.now() - started) / 1000, true);
          onError(error);
        },
      )
      .finally(() => {
        running = undefined;
      });
  }, ms);
  return {
    async stop() {
      clearInterval(timer);
      await running;
    },
  };
}
