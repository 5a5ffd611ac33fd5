import { setTimeout as sleep } from "node:timers/promises";
import type { CallContext } from "./context.js";
import { Code, ServiceError } from "./errors.js";

/** A failure or delay to inject into one rpc, for fault tests and drills. */
export interface Fault {
  /** Wait this long first (cut short if the call is cancelled). */
  delayMs?: number;
  /** Then fail with this code instead of running the handler. */
  code?: Code;
}

/**
 * Faults by rpc name ("CommitReservation"), changeable while the server runs. Only code can set
 * them (RunningServer.faults); nothing in the environment turns them on.
 */
export type Faults = Map<string, Fault>;

export async function injectFault(fault: Fault | undefined, ctx: CallContext): Promise<void> {
  if (!fault) return;
  if (fault.delayMs) await sleep(fault.delayMs, undefined, { signal: ctx.signal }).catch(() => {});
  if (ctx.signal.aborted) {
    throw new ServiceError(Code.CANCELLED, "the call ended while its injected delay ran");
  }
  if (fault.code !== undefined) {
    throw new ServiceError(fault.code, `injected fault on ${ctx.method}`, {
      reason: "INJECTED_FAULT",
    });
  }
}
