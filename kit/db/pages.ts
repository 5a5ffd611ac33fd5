// A page of a table, kept under a size a gRPC client takes (AIP-158's page_size is a maximum).
import type { Knex } from "knex";

/**
 * The most a page's items may add up to, in encoded bytes: half of the 4 MB a gRPC client
 * receives by default, so that a full page of the largest items still arrives.
 */
export const PAGE_BYTES = 2 * 1024 * 1024;

/** The UTF-8 size of some text fields, for a page's size estimate. */
export const textBytes = (...texts: string[]) =>
  texts.reduce((sum, text) => sum + Buffer.byteLength(text), 0);

/**
 * How many of the first items fit in `budget` bytes, given each one's (estimated) encoded size;
 * at least one, so that a list always moves on. A page may hold fewer than page_size items.
 */
function fitting(sizes: readonly number[], budget = PAGE_BYTES): number {
  let total = 0;
  for (let i = 0; i < sizes.length; i++) {
    total += sizes[i] as number;
    if (total > budget) return Math.max(i, 1);
  }
  return sizes.length;
}

export interface PageOptions<Row, Item> {
  /** The seq a previous page ended at: the page continues after it (before it, newest first). */
  from?: number;
  newestFirst?: boolean;
  /** What the rows become (for example, with rows of another table); one item per row. */
  items?: (rows: Row[]) => Item[] | Promise<Item[]>;
  /** An item's encoded size, roughly: the page stops before it passes PAGE_BYTES. */
  sizeOf?: (item: Item) => number;
}

/**
 * One page of a table in `seq` order (keyset pagination): up to `limit` items, fewer when their
 * sizes would pass PAGE_BYTES (at least one), and the seq to continue from when more remain.
 */
export async function pageBySeq<Row extends { seq: number }, Item = Row>(
  query: Knex.QueryBuilder,
  limit: number,
  options: PageOptions<Row, Item> = {},
): Promise<{ items: Item[]; nextSeq?: number }> {
  const { from, newestFirst = false, sizeOf } = options;
  if (from !== undefined) query.where("seq", newestFirst ? "<" : ">", from);
  const rows = (await query.orderBy("seq", newestFirst ? "desc" : "asc").limit(limit + 1)) as Row[];
  const candidates = rows.slice(0, limit);
  const items = options.items ? await options.items(candidates) : (candidates as unknown as Item[]);
  const count = sizeOf ? fitting(items.map(sizeOf)) : items.length;
  const last = rows[count - 1];
  return {
    items: items.slice(0, count),
    ...(rows.length > count && last && { nextSeq: last.seq }),
  };
}
