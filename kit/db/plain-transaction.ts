// The transaction of sqlOf's own paths (sql.ts on better-sqlite3, sql-postgres.ts): the same
// BEGIN, work, COMMIT or ROLLBACK on a connection the caller holds. Only those files use this one.

import { noteFirst, type TransactionInfo } from "./observe.js";
import type { Binding, SqlStatements } from "./sql-api.js";
import { markUncommitted } from "./uncommitted.js";

/** One engine's steps on the held connection; each may answer at once or with a promise. */
export interface TransactionSteps {
  begin(): unknown;
  commit(): unknown;
  rollback(): unknown;
  run<Row>(text: string, bindings: readonly Binding[]): Row[] | Promise<Row[]>;
}

/**
 * Runs `work` between begin and commit, and rolls back when it throws. Its statements run
 * through `steps.run`, the first noted in `info`; one made after the end is refused, since the
 * connection may carry another transaction by then.
 */
export async function plainTransaction<T>(
  steps: TransactionSteps,
  info: TransactionInfo,
  work: (trx: SqlStatements) => Promise<T>,
): Promise<T> {
  let open = true;
  const trx: SqlStatements = {
    query: async <Row>(text: string, bindings: readonly Binding[] = []) => {
      if (!open) throw new Error("a statement of a transaction that has ended");
      noteFirst(info, text);
      return steps.run<Row>(text, bindings);
    },
  };
  await steps.begin();
  try {
    const result = await work(trx).catch((error) => Promise.reject(markUncommitted(error)));
    await steps.commit();
    return result;
  } catch (error) {
    await steps.rollback();
    throw error;
  } finally {
    open = false;
  }
}
