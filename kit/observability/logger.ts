import * as grpc from "@grpc/grpc-js";
import { pino } from "pino";
import { traceFields } from "./tracing.js";

export type Logger = pino.Logger;

/** How long a log line may wait in the buffer before it is written. */
const FLUSH_MS = 100;

/** Every logger's destination: flushed every FLUSH_MS, and written out as the process exits. */
const destinations = new Set<ReturnType<typeof pino.destination>>();
setInterval(() => {
  for (const destination of destinations) destination.flush();
}, FLUSH_MS).unref();
process.once("exit", () => {
  for (const destination of destinations) {
    // A stdout that is gone must not turn an exit into a crash.
    try {
      destination.flushSync();
    } catch {}
  }
});

/**
 * Makes a piped stdout blocking again. Node makes it non-blocking as soon as anything reads
 * `process.stdout` (knex does as it loads); a write then meets EAGAIN whenever the reader falls
 * behind, and sonic-boom answers EAGAIN by freezing the whole process for 100 ms. Blocking, a
 * write waits only until the reader has made room. A file has no handle and blocks already.
 */
function blockingStdout(): void {
  const { _handle: handle } = process.stdout as { _handle?: { setBlocking?(on: boolean): number } };
  handle?.setBlocking?.(true);
}

/**
 * Structured JSON logs on stdout, one object per line. Lines are buffered (up to 4 KB, at most
 * 100 ms) and written together: one write per line was about a third of the kit's per-call cost
 * on the benchmark's echo. Each write is synchronous, as pino's own default: handing it to a
 * libuv thread cost more than the write, and a stalled reader slows the logging process instead
 * of growing its memory (see blockingStdout). A line written while a span is active carries its
 * `trace_id` and `span_id` (an rpc's own line carries its call's).
 */
export function createLogger(service: string, level = "info"): Logger {
  blockingStdout();
  const destination = pino.destination({ dest: 1, sync: true, minLength: 4096 });
  destinations.add(destination);
  return pino(
    {
      level,
      base: { service },
      timestamp: pino.stdTimeFunctions.isoTime,
      serializers: { err: withoutRowData },
      mixin: () => traceFields(),
    },
    destination,
  );
}

/**
 * pino's error serializer, less PostgreSQL's `detail`, which quotes the row a constraint refused
 * ("Key (email_key)=(…) already exists"): user data stays out of the log. Whatever else is logged
 * as `err` (a thrown string, a plain object) passes as pino would pass it, copied, not changed.
 */
export function withoutRowData(error: unknown): unknown {
  const serialized: unknown = pino.stdSerializers.err(error as Error);
  if (serialized === null || typeof serialized !== "object" || !("detail" in serialized)) {
    return serialized;
  }
  const { detail: _, ...rest } = serialized as Record<string, unknown>;
  return rest;
}

/** Resolves once every line logged so far is written. */
export function flushLogger(logger: Logger): Promise<void> {
  return new Promise((resolve) => logger.flush(() => resolve()));
}

/**
 * grpc-js's own messages (a port it could not bind, say) as `logger`'s JSON lines instead of
 * bare text on stderr. GRPC_VERBOSITY already chose which ones to print, so debug and info lines
 * are kept at `info`, where the service's level still lets them through.
 */
export function logGrpcJsTo(logger: Logger): void {
  const library = logger.child({ library: "grpc-js" });
  // grpc-js says so once per header, and a call may carry a hundred of them in 200 bytes: one
  // line a second at most, counting what the lines between were about.
  let dropped = 0;
  let lastLine = 0;
  const droppedHeader = (header: string) => {
    dropped++;
    const now = Date.now();
    if (now - lastLine < 1000) return;
    library.warn(
      { header: header.slice(0, 100), dropped },
      "a request header that is not valid metadata was dropped",
    );
    dropped = 0;
    lastLine = now;
  };
  const line =
    (level: "info" | "error") =>
    (message: unknown, ...rest: unknown[]) => {
      const text = [message, ...rest].join(" ");
      // A request header it could not read, quoted whole: a caller's token among them.
      const header = /^Failed to add metadata entry ([^:]*):/.exec(text)?.[1];
      if (header === undefined) library[level](text);
      else droppedHeader(header);
    };
  grpc.setLogger({
    error: line("error"),
    info: line("info"),
    debug: line("info"),
  } as Partial<Console>);
}
