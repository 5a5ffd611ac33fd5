// A grpc-js caller on a thread of its own that asks for a page, then stops reading for a while as
// its reply starts to come, as a process that stalls does: the HTTP/2 window it granted fills and
// the rest of the page waits at the server. Its thread is blocked, the test's is not.
import { Worker } from "node:worker_threads";

/** What the caller got. */
export interface CallerGot {
  code: number;
  details: string;
}

/**
 * Calls ListProducts at `address` (plaintext) with x-request-id `requestId`, and stops reading
 * for `stallMs` once the reply's headers arrive. Resolves with the status it got.
 */
export function stallingLister(
  address: string,
  requestId: string,
  stallMs: number,
): Promise<CallerGot> {
  const worker = new Worker(new URL("./stalling-lister.worker.ts", import.meta.url), {
    workerData: { address, requestId, stallMs },
  });
  return new Promise<CallerGot>((resolve, reject) => {
    worker.once("message", resolve);
    worker.once("error", reject);
  }).finally(() => worker.terminate());
}
