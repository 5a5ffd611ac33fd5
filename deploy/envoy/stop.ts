// How a deployed Envoy stops without cutting the calls it serves. Envoy exits at once on SIGTERM,
// so before that its listeners are drained (every connection is told to go away while new ones
// still land), and then the stop waits while any request is in flight. Kubernetes runs the drain
// as Envoy's preStop hook; compose, which only signals, runs Envoy under a bash that drains it on
// SIGTERM. bash, because the Envoy image has no curl.

import { UNARY_TIMEOUT_S } from "./routes.js";
import { ENVOY_ADMIN_PORT } from "./topology.js";

/** Seconds a stopping Envoy waits for its calls in flight: the edge's longest unary call. */
export const ENVOY_CALLS_S = UNARY_TIMEOUT_S;

/**
 * The drain, as bash: POST /drain_listeners?graceful to the admin, sleep `drainS` (Envoy's
 * --drain-time-s), then wait while the front door (the `ingress` HTTP connection manager) has a
 * request active, at most ENVOY_CALLS_S. An admin request that gets no answer gives up after
 * 2 s of silence. ENVOY_PRESTOP_ADMIN, _DRAIN_S and _CALLS_S override the three, for tests that
 * run it against an Envoy of their own.
 */
export const drainScript = (drainS: number) => `admin() {
  exec 3<>"/dev/tcp/127.0.0.1/\${ENVOY_PRESTOP_ADMIN:-${ENVOY_ADMIN_PORT}}" || return
  printf '%s %s HTTP/1.1\\r\\nHost: localhost\\r\\nContent-Length: 0\\r\\nConnection: close\\r\\n\\r\\n' "$1" "$2" >&3
  while IFS= read -r -t 2 line <&3; do printf '%s\\n' "$line"; done
  exec 3<&-
}
admin POST '/drain_listeners?graceful' >/dev/null
sleep "\${ENVOY_PRESTOP_DRAIN_S:-${drainS}}"
end=$((SECONDS + \${ENVOY_PRESTOP_CALLS_S:-${ENVOY_CALLS_S}}))
while ((SECONDS < end)); do
  active=
  while IFS= read -r line; do
    [[ $line == "http.ingress.downstream_rq_active: "* ]] && active=\${line##* }
  done < <(admin GET '/stats?filter=downstream_rq_active')
  [[ $active == 0 ]] && break
  sleep 0.5
done
`;

/** Envoy's arguments as bash words: each in single quotes. */
const words = (args: readonly string[]) =>
  args.map((arg) => `'${arg.replaceAll("'", `'\\''`)}'`).join(" ");

/**
 * A bash script that runs `envoy args…` and, on SIGTERM or SIGINT, drains it (drainScript)
 * before it passes the signal on: for a runtime that only signals its container (compose). It
 * exits with Envoy's status.
 */
export const drainingEnvoy = (args: readonly string[], drainS: number) => `stop() {
${drainScript(drainS)}kill -TERM "$envoy"
}
envoy ${words(args)} &
envoy=$!
trap stop TERM INT
wait "$envoy"
status=$?
# A trapped signal ends the wait early: wait again, for Envoy's own exit.
while kill -0 "$envoy" 2>/dev/null; do
  wait "$envoy"
  status=$?
done
exit "$status"
`;
