// Traces of a service's database work: a span per store transaction, under the call's span.

import { isRefusal } from "../errors.js";
import { inSpan } from "../observability/tracing.js";
import { type DatabaseObserver, engineOf, type Knex } from "./index.js";

/**
 * A span per store transaction (an observer of kit/db/index.ts), a child of the active span, named
 * after the transaction's first statement: "transaction insert reservations".
 */
export function databaseTracing(db: Knex): DatabaseObserver {
  const system = engineOf(db) === "postgres" ? "postgresql" : "sqlite";
  return {
    transaction: (run, info) =>
      inSpan(
        "transaction",
        async (span) => {
          try {
            return await run();
          } finally {
            if (info.first) {
              span.updateName(`transaction ${info.first}`);
              span.setAttribute("db.operation.name", info.first);
            }
          }
        },
        { "db.system.name": system },
        // A transaction undone to refuse the caller did what it should: not an error span.
        (error) => !isRefusal(error),
      ),
  };
}
