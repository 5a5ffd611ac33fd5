import type { Metadata } from "@grpc/grpc-js";

/** What a handler knows about the call it serves, beyond the request message. */
export interface CallContext {
  /** Full method path, for example "/shop.user.v1.UserService/GetUser". */
  readonly method: string;
  /** The caller's metadata. */
  readonly metadata: Metadata;
  /** The caller's deadline, if it set one. Downstream calls inherit it. */
  readonly deadline: Date | undefined;
  /** Aborted when the caller cancels or the deadline passes. Downstream calls inherit it. */
  readonly signal: AbortSignal;
  /** The `x-request-id` header, or a fresh id: ties the log lines of one request together. */
  readonly requestId: string;
}
