import { Metadata } from "@grpc/grpc-js";
import type { CallContext } from "../../kit/context.js";

/** The context a handler gets for a call with no deadline that nobody cancels. */
export const callContext = (service: string, method: string): CallContext => ({
  method: `/${service}/${method}`,
  metadata: new Metadata(),
  deadline: undefined,
  signal: new AbortController().signal,
  requestId: `test-${method}`,
});
