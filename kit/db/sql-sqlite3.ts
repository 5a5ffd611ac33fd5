// sqlOf on node-sqlite3: each statement on a statement the connection keeps
// (statement-cache-sqlite3.ts), without knex's runner or transaction around it. Only sql.ts uses
// this file.
import type { Knex } from "knex";
import type { Binding, Sql } from "./sql-api.js";
import { pooledSql } from "./sql-pooled.js";
import { type Connection, type Done, statementFor } from "./statement-cache-sqlite3.js";

/** The rows of `text` run on `connection`: a write without RETURNING has none. */
async function rowsOf(connection: Connection, text: string, bindings: readonly Binding[]) {
  const statement = await statementFor(connection, text);
  return new Promise<unknown[]>((resolve, reject) => {
    const done: Done = (error, rows) => (error ? reject(error) : resolve(rows ?? []));
    // Past the connection's kept statements, one prepared for this run.
    if (statement) statement.all(bindings, done);
    else connection.all(text, bindings, done);
  });
}

/** Plain SQL on a knex of the sqlite3 driver. */
export function sqlite3Sql(db: Knex): Sql {
  return pooledSql<Connection>(db, {
    run: rowsOf,
    rollback: (connection) =>
      rowsOf(connection, "ROLLBACK", []).catch((error: Error) => {
        // SQLite ended the transaction itself on some errors (a full disk, a busy wait).
        if (!/no transaction is active/.test(error.message)) throw error;
      }),
  });
}
