import { pino } from "pino";

export type Logger = pino.Logger;

/** Structured JSON logs on stdout, one object per line. */
export function createLogger(service: string, level = "info"): Logger {
  return pino({ level, base: { service }, timestamp: pino.stdTimeFunctions.isoTime });
}
