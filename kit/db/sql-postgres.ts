// Plain SQL on PostgreSQL: each statement a named one, which every connection of knex's pool
// parses and plans once and then only binds and runs. knex.raw sends every statement unnamed,
// so the server parses and plans it again each time, and knex's runner wraps each in its own
// bookkeeping: per GetProduct's read, about half of the server's work and a third of the
// service's (docs/performance.md). Only sql.ts uses this file; sql-pooled.ts runs the statements.
import { createHash } from "node:crypto";
import type { Knex } from "knex";
import { namesStatements, postgresErrors } from "./postgres.js";
import type { Binding, Sql } from "./sql-api.js";
import { pooledSql } from "./sql-pooled.js";

/** A connection of knex's `pg` pool: a pg Client. */
interface Connection {
  query(
    config: string | { name?: string; text: string; values?: readonly Binding[] },
  ): Promise<{ rows: unknown[] }>;
}

/**
 * Texts named at most, per process. The services run a few dozen; a multi-row VALUES list makes
 * one per row count. A text past this runs unnamed, as knex would run it.
 */
const MAX_NAMED = 500;

/**
 * Each text's SQL in PostgreSQL's `$n` form, and the part of its statement's name drawn from it:
 * the same text has the same name in every process and version, so a connection handed from one
 * client to another (a pooler) can never run another text under a name it knows.
 */
const texts = new Map<string, { id: string; text: string }>();

/** `sql` with its `?` placeholders numbered `$1, $2, …`; a `?` inside quotes is left alone. */
export function numbered(sql: string): string {
  let n = 0;
  let quote: string | undefined;
  let out = "";
  for (const char of sql) {
    if (quote) {
      if (char === quote) quote = undefined;
    } else if (char === "'" || char === '"') {
      quote = char;
    } else if (char === "?") {
      out += `$${++n}`;
      continue;
    }
    out += char;
  }
  return out;
}

/**
 * The query pg sends for `sql`, with its bindings: named `shop_<generation>_<hash of the text>`
 * while there is room, unless `named` is off.
 */
function queryOf(sql: string, values: readonly Binding[], named: boolean, generation: number) {
  let known = texts.get(sql);
  if (!known) {
    const text = numbered(sql);
    if (texts.size >= MAX_NAMED) return { text, values };
    known = { id: createHash("sha256").update(text).digest("hex").slice(0, 16), text };
    texts.set(sql, known);
  }
  if (!named) return { text: known.text, values };
  return { name: `shop_${generation}_${known.id}`, text: known.text, values };
}

/** Plain SQL on a `pg` knex: named statements on the pool's connections, unless turned off. */
export function postgresSql(db: Knex): Sql {
  const named = namesStatements(db);
  // A statement whose table changed under it (stalePlan) fails on every run until prepared
  // again: a new generation prepares every text again, under new names, on every connection.
  let generation = 0;
  return pooledSql<Connection>(db, {
    async run(connection, sql, bindings) {
      try {
        // A statement without bindings (BEGIN, COMMIT) goes as it is, in one message.
        const { rows } = await connection.query(
          bindings.length === 0 ? sql : queryOf(sql, bindings, named, generation),
        );
        return rows;
      } catch (error) {
        if (postgresErrors.stalePlan(error)) generation++;
        throw error;
      }
    },
    // A connection that broke is dropped by knex's pool; the server rolled it back.
    rollback: (connection) => connection.query("ROLLBACK").catch(() => {}),
    // A stale statement ran nothing: once prepared again, it runs.
    againAlone: postgresErrors.stalePlan,
    // As inTransaction: a transaction the server rolled back to keep transactions apart, or
    // one that met a stale statement, kept nothing and runs again.
    againWhole: (error) => postgresErrors.serialization(error) || postgresErrors.stalePlan(error),
  });
}
