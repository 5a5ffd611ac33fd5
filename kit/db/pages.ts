// A page of a table, kept under a size a gRPC client takes (AIP-158's page_size is a maximum).
import type { Knex } from "knex";

/**
 * The most a page's items may add up to, in encoded bytes: half of the 4 MB a gRPC client
 * receives by default, so that a full page of the largest items still arrives.
 */
export const PAGE_BYTES = 2 * 1024 * 1024;

/**
 * The smallest byte budget a caller may ask a page to keep under (pageBytesOf): a page still
 * holds at least one item, however large.
 */
export const MIN_PAGE_BYTES = 16 * 1024;

/** The UTF-8 size of some text fields, for a page's size estimate. */
export const textBytes = (...texts: string[]) =>
  texts.reduce((sum, text) => sum + Buffer.byteLength(text), 0);

/**
 * Rows of the table a filtered page looks at, at most: a filter that few rows pass ends a page
 * early, even empty, rather than read the whole table (AIP-158 lets a page hold fewer items).
 */
export const SCAN_ROWS = 10_000;

/** Rows a sized page makes into items first; later batches follow the sizes seen. */
const FIRST_BATCH = 100;

/**
 * The first of `rows` made into items whose sizes add up to at most `bytes`, and at least one,
 * so that a list always moves on. Rows are made a batch at a time, each batch as many as the room
 * left holds at the average size so far (and a tenth more): a page of large items does not make
 * hundreds of items it then drops, such as orders whose lines are read with them.
 */
async function fittingItems<Row, Item>(
  rows: readonly Row[],
  make: (rows: Row[]) => (Item | undefined)[] | Promise<(Item | undefined)[]>,
  sizeOf: (item: Item) => number,
  bytes: number,
): Promise<(Item | undefined)[]> {
  const items: (Item | undefined)[] = [];
  let total = 0;
  let sized = 0;
  for (let next = 0; next < rows.length; ) {
    const batch =
      sized === 0 ? FIRST_BATCH : Math.max(1, Math.ceil(((bytes - total) / (total / sized)) * 1.1));
    const made = await make(rows.slice(next, next + batch));
    next += batch;
    for (const item of made) {
      if (item !== undefined) {
        total += sizeOf(item);
        if (total > bytes && sized > 0) return items;
        sized++;
      }
      items.push(item);
    }
  }
  return items;
}

export interface PageOptions<Row, Item> {
  /** The seq a previous page ended at: the page continues after it (before it, newest first). */
  from?: number;
  newestFirst?: boolean;
  /**
   * What the rows become (for example, with rows of another table): one item per row, or
   * undefined for a row found gone meanwhile, which the page leaves out and still moves past.
   */
  items?: (rows: Row[]) => (Item | undefined)[] | Promise<(Item | undefined)[]>;
  /** An item's encoded size, roughly: the page stops before it passes `bytes`. */
  sizeOf?: (item: Item) => number;
  /** The most the page's items may add up to: PAGE_BYTES, or less (pageBytesOf). */
  bytes?: number;
  /**
   * For a filtered query, the same table unfiltered: the page then looks at no more than
   * SCAN_ROWS of its rows, and continues after them when none or too few passed the filter.
   */
  unfiltered?: () => Knex.QueryBuilder;
}

/** The seq of the first row past SCAN_ROWS from `from`, when there is one. */
async function scanEnd(
  table: Knex.QueryBuilder,
  from: number | undefined,
  newestFirst: boolean,
): Promise<number | undefined> {
  if (from !== undefined) table.where("seq", newestFirst ? "<" : ">", from);
  const [row] = (await table
    .select("seq")
    .orderBy("seq", newestFirst ? "desc" : "asc")
    .offset(SCAN_ROWS)
    .limit(1)) as { seq: number }[];
  return row?.seq;
}

/**
 * One page of a table in `seq` order (keyset pagination): up to `limit` items, fewer when their
 * sizes would pass the page's bytes (at least one), and the seq to continue from when more remain.
 */
export async function pageBySeq<Row extends { seq: number }, Item = Row>(
  query: Knex.QueryBuilder,
  limit: number,
  options: PageOptions<Row, Item> = {},
): Promise<{ items: Item[]; nextSeq?: number }> {
  const { from, newestFirst = false, sizeOf, bytes = PAGE_BYTES } = options;
  if (from !== undefined) query.where("seq", newestFirst ? "<" : ">", from);
  const beyond = options.unfiltered && (await scanEnd(options.unfiltered(), from, newestFirst));
  if (beyond !== undefined) query.where("seq", newestFirst ? ">" : "<", beyond);
  const rows = (await query.orderBy("seq", newestFirst ? "desc" : "asc").limit(limit + 1)) as Row[];
  const candidates = rows.slice(0, limit);
  const make = options.items ?? ((made: Row[]) => made as unknown as Item[]);
  // One per row looked at, so that the page continues after the last of them.
  const looked = sizeOf
    ? await fittingItems(candidates, make, sizeOf, bytes)
    : await make(candidates);
  const items = looked.filter((item): item is Item => item !== undefined);
  const last = rows[looked.length - 1];
  if (rows.length > looked.length && last) return { items, nextSeq: last.seq };
  // Every row before `beyond` was looked at: the next page starts there.
  return {
    items,
    ...(beyond !== undefined && { nextSeq: newestFirst ? beyond + 1 : beyond - 1 }),
  };
}
