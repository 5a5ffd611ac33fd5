import { Metadata } from "@grpc/grpc-js";
import { detachedContext, type ServerCallContext } from "../../kit/context.js";
import { contractMethods } from "../../kit/contract.js";
import { CALLER, type Caller } from "../../kit/security/auth.js";

/** The caller a handler test acts as unless it says otherwise: an admin. */
export const TEST_ADMIN: Caller = { userId: "usr_test_admin", roles: ["admin"] };

/**
 * The context a handler gets for a call of `service`'s `rpc` (as the contract states it), with no
 * deadline, cancelled only through `signal`, signed in as `caller` (an admin by
 * default; null for none), as the auth middleware would have left it. A `token` goes into the
 * metadata, for handlers that call other services on the caller's behalf.
 */
export function callContext(
  service: string,
  rpc: string,
  options: {
    metadata?: Metadata;
    signal?: AbortSignal;
    caller?: Caller | null;
    token?: string;
  } = {},
): ServerCallContext {
  const method = contractMethods(service).find((candidate) => candidate.rpc === rpc);
  if (!method) throw new Error(`${service} has no rpc ${rpc}`);
  const metadata = options.metadata ?? new Metadata();
  if (options.token) metadata.set("authorization", `Bearer ${options.token}`);
  const ctx = detachedContext(method, { ...options, metadata });
  const caller = options.caller === undefined ? TEST_ADMIN : options.caller;
  if (caller) ctx.set(CALLER, caller);
  return ctx;
}
