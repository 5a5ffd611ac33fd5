// What sqlOf gives a store: plain SQL with `?` placeholders, on its own or in a transaction. The
// paths that run it are sql.ts and the sql-* files beside it.

/** A statement's binding: integers past 2^53 as decimal strings (kit/db/index.ts integerBinding). */
export type Binding = string | number | null;

/** Runs statements, inside a transaction or on their own. */
export interface SqlStatements {
  /**
   * Runs one statement with `?` placeholders and returns its rows: those a query selects or a
   * write's RETURNING clause names, none for a write without one.
   */
  query<Row = Record<string, unknown>>(text: string, bindings?: readonly Binding[]): Promise<Row[]>;
}

/** Plain SQL on a service's database. */
export interface Sql extends SqlStatements {
  /**
   * Runs `work` in one transaction, committed when it resolves and rolled back when it throws.
   * On PostgreSQL a serialization failure or deadlock runs it again, as inTransaction does.
   */
  transaction<T>(work: (trx: SqlStatements) => Promise<T>): Promise<T>;
}
