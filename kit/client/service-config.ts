import {
  HEDGE_AFTER_S,
  hedgeAfterS,
  hedged,
  type MethodInfo,
  methodsOf,
  retriable,
  type ServiceDefinition,
} from "../contract.js";
import type { ClientOptions } from "./types.js";

/** How a client retries an rpc its contract lets it repeat. */
export const RETRY_POLICY = {
  maxAttempts: 4,
  initialBackoff: "0.05s",
  maxBackoff: "1s",
  backoffMultiplier: 2,
  retryableStatusCodes: ["UNAVAILABLE"],
};

/** The rpcs a client retries on UNAVAILABLE: those its contract lets it repeat, and `alsoRetry`. */
export function retriedMethods(
  definition: ServiceDefinition,
  options: Pick<ClientOptions, "alsoRetry">,
): MethodInfo[] {
  return Object.values(methodsOf(definition)).filter(
    (method) => retriable(method) || options.alsoRetry?.includes(method.rpc),
  );
}

/**
 * How a client hedges a read: the retry policy's attempts, sent HEDGE_AFTER_S apart (a list's
 * hedgeAfterS apart).
 */
export const HEDGING_POLICY = {
  maxAttempts: RETRY_POLICY.maxAttempts,
  hedgingDelay: `${HEDGE_AFTER_S}s`,
  // An attempt answered UNAVAILABLE is followed by the next at once.
  nonFatalStatusCodes: RETRY_POLICY.retryableStatusCodes,
};

/**
 * The gRPC service config of a client: round_robin, and a retry policy on UNAVAILABLE for every
 * rpc whose `idempotency_level` makes a repeat harmless (plus `alsoRetry`), or with `direct` a
 * hedging policy instead for the unary reads. Other rpcs get only grpc's transparent retries, of
 * calls that never reached a server.
 */
export function serviceConfigFor(
  definition: ServiceDefinition,
  options: Pick<ClientOptions, "alsoRetry" | "direct"> = {},
): { loadBalancingConfig: object[]; methodConfig: object[] } {
  const names = (methods: MethodInfo[]) =>
    methods.map((method) => ({ service: method.service, method: method.rpc }));
  const retried = retriedMethods(definition, options);
  const hedgedHere = (method: MethodInfo) => options.direct === true && hedged(method);
  const reads = retried.filter(hedgedHere);
  const others = retried.filter((method) => !hedgedHere(method));
  const delays = [...new Set(reads.map(hedgeAfterS))];
  return {
    loadBalancingConfig: [{ round_robin: {} }],
    methodConfig: [
      ...delays.map((delay) => ({
        name: names(reads.filter((method) => hedgeAfterS(method) === delay)),
        hedgingPolicy: { ...HEDGING_POLICY, hedgingDelay: `${delay}s` },
      })),
      ...(others.length ? [{ name: names(others), retryPolicy: RETRY_POLICY }] : []),
    ],
  };
}
