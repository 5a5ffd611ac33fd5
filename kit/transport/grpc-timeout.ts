// grpc-js reads a grpc-timeout header loosely and stores it in 32 bits: "-1S" is one second,
// "5S junk" five, and a deadline of 24.9 days or more wraps around, so a 30-day WatchOrder ended
// at once with DEADLINE_EXCEEDED. Here a server reads it as the gRPC spec writes it: 1 to 8
// digits and a unit, with a timer that waits as long as that says. Anything else gets grpc-js's
// own "Invalid grpc-timeout value", which kit/transport/framing.ts answers INVALID_ARGUMENT.
import { status } from "@grpc/grpc-js";
import { BaseServerInterceptingCall } from "@grpc/grpc-js/build/src/server-interceptors.js";

/** grpc-timeout as the gRPC spec writes it; Envoy's edge refuses a value it does not match. */
export const GRPC_TIMEOUT_PATTERN = "^([0-9]{1,8})([HMSmun])$";
const TIMEOUT = new RegExp(GRPC_TIMEOUT_PATTERN);
const UNIT_MS: Record<string, number> = {
  H: 3_600_000,
  M: 60_000,
  S: 1000,
  m: 1,
  u: 1e-3,
  n: 1e-6,
};
/** The longest setTimeout waits; a longer deadline re-arms its timer. */
const TIMER_MAX_MS = 2 ** 31 - 1;

/** The private state of grpc-js's call that its deadline lives in. */
interface DeadlineHolder {
  deadline: number;
  deadlineTimer: NodeJS.Timeout | null;
  sendStatus(sent: { code: number; details: string; metadata: null }): void;
}

let installed = false;

/** Reads grpc-timeout strictly in every grpc-js server of this process; grpc-js's own if it moved. */
export function readTimeoutsStrictly(): void {
  const prototype = BaseServerInterceptingCall?.prototype as unknown as {
    handleTimeoutHeader?: (header: string) => void;
  };
  if (installed || typeof prototype?.handleTimeoutHeader !== "function") return;
  installed = true;
  prototype.handleTimeoutHeader = function (this: DeadlineHolder, header: string) {
    const match = TIMEOUT.exec(String(header));
    if (!match) {
      // After the constructor, as grpc-js does: the call is not set up yet.
      process.nextTick(() =>
        this.sendStatus({
          code: status.INTERNAL,
          details: `Invalid grpc-timeout value "${header}"`,
          metadata: null,
        }),
      );
      return;
    }
    this.deadline = Date.now() + Number(match[1]) * (UNIT_MS[match[2] as string] as number);
    const arm = () => {
      const left = Math.max(this.deadline - Date.now(), 0);
      this.deadlineTimer =
        left > TIMER_MAX_MS
          ? setTimeout(arm, TIMER_MAX_MS)
          : setTimeout(
              () =>
                this.sendStatus({
                  code: status.DEADLINE_EXCEEDED,
                  details: "Deadline exceeded",
                  metadata: null,
                }),
              left,
            );
    };
    arm();
  };
}
