import type { Metadata } from "@grpc/grpc-js";
import { detachedContext, type ServerCallContext } from "../../kit/context.js";
import { contractMethods } from "../../kit/contract.js";

/**
 * The context a handler gets for a call of `service`'s `rpc` (as the contract states it), with no
 * deadline unless given, cancelled only through `signal`.
 */
export function callContext(
  service: string,
  rpc: string,
  options: { metadata?: Metadata; deadline?: Date; signal?: AbortSignal } = {},
): ServerCallContext {
  const method = contractMethods(service).find((candidate) => candidate.rpc === rpc);
  if (!method) throw new Error(`${service} has no rpc ${rpc}`);
  return detachedContext(method, options);
}
