// The middleware chains of served and outgoing calls. The kit's own concerns are middleware like
// any other; auth, metrics and tracing plug in the same way. See docs/architecture.md.
import type { Logger } from "../logger.js";
import { deadlineClient, deadlineServer } from "./deadline.js";
import { logging } from "./logging.js";
import { statusMapping } from "./status.js";
import type { ClientMiddleware, ServerMiddleware } from "./types.js";
import { xRequestIdClient, xRequestIdServer } from "./x-request-id.js";

export { cancelledWith } from "./deadline.js";
export * from "./types.js";
export { X_REQUEST_ID } from "./x-request-id.js";

/** What every served call goes through, outermost first. */
export function defaultServerMiddleware(logger: Logger): ServerMiddleware[] {
  return [logging(logger), statusMapping, xRequestIdServer, deadlineServer];
}

/** What every outgoing call goes through, outermost first. */
export function defaultClientMiddleware(options: { defaultTimeoutMs: number }): ClientMiddleware[] {
  return [deadlineClient(options.defaultTimeoutMs), xRequestIdClient];
}
