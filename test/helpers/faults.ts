// Fault injection, for tests only: a server middleware that delays or fails chosen rpcs. Nothing
// in production code can turn it on; a test fleet installs it on every service it starts.
import { setTimeout as sleep } from "node:timers/promises";
import type { CallContext } from "../../kit/context.js";
import { Code, ServiceError } from "../../kit/errors.js";
import type { ServerMiddleware } from "../../kit/middleware/index.js";

/** A failure or delay to inject into one rpc. */
export interface Fault {
  /** Wait this long first (cut short if the call is cancelled). */
  delayMs?: number;
  /** Then fail with this code instead of running the handler. */
  code?: Code;
  /** Run the handler first, then fail with `code`: the work is done and its reply lost. */
  afterHandler?: boolean;
  /** Hand the handler this instead of the request: a caller or server of another version. */
  rewrite?: (request: never) => unknown;
}

async function inject(fault: Fault, ctx: CallContext): Promise<void> {
  if (fault.delayMs) await sleep(fault.delayMs, undefined, { signal: ctx.signal }).catch(() => {});
  if (ctx.signal.aborted) {
    throw new ServiceError(Code.CANCELLED, "the call ended while its injected delay ran");
  }
  if (fault.code !== undefined && !fault.afterHandler) fail(fault.code, ctx);
}

function fail(code: Code, ctx: CallContext): never {
  throw new ServiceError(code, `injected fault on ${ctx.method.path}`, {
    reason: "INJECTED_FAULT",
  });
}

/** Faults by rpc name ("CommitReservation"), changeable while the server runs. */
export class Faults {
  private readonly byRpc = new Map<string, Fault>();
  private readonly injecting = new Map<string, number>();

  readonly middleware: ServerMiddleware = {
    name: "test-faults",
    wrap: (method, next) => (request, ctx) => {
      const fault = this.byRpc.get(method.rpc);
      if (!fault) return next(request, ctx);
      const { rpc } = method;
      this.injecting.set(rpc, (this.injecting.get(rpc) ?? 0) + 1);
      return inject(fault, ctx)
        .finally(() => this.injecting.set(rpc, (this.injecting.get(rpc) ?? 1) - 1))
        .then(() => next((fault.rewrite?.(request as never) ?? request) as typeof request, ctx))
        .then((response) => {
          if (fault.afterHandler && fault.code !== undefined) fail(fault.code, ctx);
          return response;
        });
    },
  };

  /** How many calls of `rpc` are inside their injected fault right now. */
  inFault(rpc: string): number {
    return this.injecting.get(rpc) ?? 0;
  }

  set(rpc: string, fault: Fault): void {
    this.byRpc.set(rpc, fault);
  }

  clear(): void {
    this.byRpc.clear();
  }
}
