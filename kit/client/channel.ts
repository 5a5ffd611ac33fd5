// How a client's channel dials a service and keeps its connections.

/**
 * "host:port" dials one address (resolved by DNS, so a headless Service name spreads across its
 * pods); "a:1,b:2" dials a fixed list of IP replicas; a target with a scheme ("dns:///…",
 * "ipv4:…") passes through. Every form is balanced round_robin.
 */
export function channelTarget(address: string): string {
  if (/^[a-z0-9]+:(\/\/|[^\d])/i.test(address) || /^ipv[46]:/i.test(address)) return address;
  const parts = address.split(",").map((part) => part.trim());
  if (parts.length === 1) return `dns:${parts[0]}`;
  if (parts.every((part) => /^\d+\.\d+\.\d+\.\d+:\d+$/.test(part)))
    return `ipv4:${parts.join(",")}`;
  if (parts.every((part) => /^\[[0-9a-f:]+\]:\d+$/i.test(part))) return `ipv6:${parts.join(",")}`;
  throw new Error(`"${address}": a list of replicas must be IP:port pairs; use a DNS name instead`);
}

/**
 * A direct client's keepalive: a ping 2 s after the last one's answer, given 2 s, so a hung
 * replica is dropped within 4 s. The calls on its connection then fail as "Connection dropped",
 * which the client sends once more when the rpc may be repeated, so a write waiting on the hung
 * replica (ReserveStock) goes through on another within its deadline. Until the drop, round
 * robin sends the replica its share of calls, and reads are hedged. The price: grpc-js also
 * drops a connection whose server sent GOAWAY (a shutdown, a maximum age) at its next ping,
 * cutting the calls still finishing on it. Only the rpcs the client repeats survive that, and
 * all of the order service's calls to its dependencies are such. Under 64 calls at once beside
 * two CPU hogs, no ping here went unanswered for even 0.5 s.
 */
export const DIRECT_KEEPALIVE = {
  "grpc.keepalive_time_ms": 2_000,
  "grpc.keepalive_timeout_ms": 2_000,
};

export const channelOptions = {
  // A dependency that restarts is back within a few hundred ms: try to reconnect at least that
  // often (grpc-js waits 1 s at first and up to 2 min by default). A refused connection to a
  // process that is down costs next to nothing.
  "grpc.initial_reconnect_backoff_ms": 100,
  "grpc.max_reconnect_backoff_ms": 250,
  // A server that hangs (stopped, its host frozen) keeps its connection open: the kernel still
  // acknowledges. Only an unanswered ping tells: within 15 s here, and DIRECT_KEEPALIVE's 4 s
  // for a client that balances over replicas itself.
  "grpc.keepalive_time_ms": 10_000,
  "grpc.keepalive_timeout_ms": 5_000,
  "grpc.keepalive_permit_without_calls": 1,
  "grpc.enable_retries": 1,
  // Nothing reads channelz here; skip its per-call bookkeeping.
  "grpc.enable_channelz": 0,
};
