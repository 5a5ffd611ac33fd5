// Envoy's overload manager: bounds on downstream connections and on the heap.

import { ENVOY_HEAP_MIB } from "../settings.js";
import { typed } from "./matchers.js";

/**
 * Bounds on what clients can make Envoy hold: downstream connections (Envoy warns at startup
 * without a limit), and its heap. Each stream's reply waits in Envoy's buffers, up to the
 * connection's buffer limit, until its caller reads it; callers that never read would grow the
 * heap without end. Streams held open and idle (a flood of health watches needs no token) fill it
 * too, some 20–40 KB each, without buffering a byte. From 75 % of the budget, Envoy cuts calls and
 * connections idle for a second (WatchOrder's routes have no idle timeout, so no watch is cut);
 * from 80 % it resets the streams holding the most buffered bytes (1 MiB and up are tracked),
 * from 90 % returns memory to the system, and from 98 % refuses new requests.
 */
export function overloadManager(heapMiB = ENVOY_HEAP_MIB) {
  const HEAP = "envoy.resource_monitors.fixed_heap";
  return {
    refresh_interval: "0.25s",
    resource_monitors: [
      {
        name: "envoy.resource_monitors.global_downstream_max_connections",
        typed_config: typed(
          "envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
          { max_active_downstream_connections: 50_000 },
        ),
      },
      {
        name: HEAP,
        typed_config: typed("envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig", {
          max_heap_size_bytes: heapMiB * 1024 * 1024,
        }),
      },
    ],
    buffer_factory_config: { minimum_account_to_track_power_of_two: 20 },
    actions: [
      {
        name: "envoy.overload_actions.reset_high_memory_stream",
        triggers: [{ name: HEAP, scaled: { scaling_threshold: 0.8, saturation_threshold: 0.95 } }],
      },
      {
        name: "envoy.overload_actions.reduce_timeouts",
        triggers: [{ name: HEAP, threshold: { value: 0.75 } }],
        typed_config: typed("envoy.config.overload.v3.ScaleTimersOverloadActionConfig", {
          timer_scale_factors: [
            "HTTP_DOWNSTREAM_STREAM_IDLE",
            "HTTP_DOWNSTREAM_CONNECTION_IDLE",
          ].map((timer) => ({ timer, min_timeout: "1s" })),
        }),
      },
      {
        name: "envoy.overload_actions.shrink_heap",
        triggers: [{ name: HEAP, threshold: { value: 0.9 } }],
      },
      {
        name: "envoy.overload_actions.stop_accepting_requests",
        triggers: [{ name: HEAP, threshold: { value: 0.98 } }],
      },
    ],
  };
}
