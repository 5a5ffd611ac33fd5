import * as grpc from "@grpc/grpc-js";
import type { CallOptions, CallStatus } from "../context.js";
import type { MethodInfo } from "../contract.js";
import type { Code } from "../errors.js";
import type { ClientCall } from "../middleware/index.js";

/** One outgoing call. */
export class OutgoingCall implements ClientCall {
  readonly metadata: grpc.Metadata;
  deadline: number | undefined;
  readonly signals: AbortSignal[] = [];
  private readonly started = performance.now();
  private listeners: ((status: CallStatus) => void)[] | undefined;

  constructor(
    readonly method: MethodInfo,
    readonly options: CallOptions,
  ) {
    this.metadata = options.metadata?.clone() ?? new grpc.Metadata();
  }

  onFinish(listener: (status: CallStatus) => void): void {
    this.listeners ??= [];
    this.listeners.push(listener);
  }

  finish(code: Code, details: string): void {
    if (!this.listeners) return;
    const status = { code, details, durationMs: performance.now() - this.started };
    for (const listener of this.listeners) listener(status);
  }
}
