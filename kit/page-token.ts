import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { env } from "./config.js";
import type { CallContext } from "./context.js";
import type { MethodInfo } from "./contract.js";
import { MIN_PAGE_BYTES, PAGE_BYTES } from "./db/pages.js";
import type { Violations } from "./validate.js";

/** The built-in secret of the development profile; the production profile refuses to run with it. */
export const DEV_PAGE_TOKEN_SECRET = "shopmesh-dev-page-token-secret";

let secret: string | undefined;

/**
 * The secret page tokens are sealed with: SHOP_PAGE_TOKEN_SECRET, else the contents of
 * SHOP_PAGE_TOKEN_SECRET_FILE (a mounted secret; one trailing newline dropped), else the built-in
 * development secret. Tokens are authenticated, so that a token the server never issued is
 * refused, not misread, and encrypted, so that a caller learns nothing from one (a cursor is a
 * row's place among every user's); replicas that share data must share the secret.
 */
export function pageTokenSecret(): string {
  if (secret === undefined) {
    const file = env.string("SHOP_PAGE_TOKEN_SECRET_FILE", "");
    secret =
      env.string("SHOP_PAGE_TOKEN_SECRET", "") || (file ? secretIn(file) : DEV_PAGE_TOKEN_SECRET);
  }
  return secret;
}

function secretIn(file: string): string {
  let text: string;
  try {
    text = readFileSync(file, "utf8").replace(/\r?\n$/, "");
  } catch (error) {
    throw new Error(
      `SHOP_PAGE_TOKEN_SECRET_FILE: cannot read ${file} (${(error as NodeJS.ErrnoException).code})`,
    );
  }
  if (text === "") throw new Error(`SHOP_PAGE_TOKEN_SECRET_FILE: ${file} is empty`);
  return text;
}

let key: Buffer | undefined;
/** The AES-256-GCM key of page tokens, derived from the secret. */
const sealingKey = () => {
  key ??= Buffer.from(hkdfSync("sha256", pageTokenSecret(), "", "shopmesh page token", 32));
  return key;
};
const IV_BYTES = 12;
const TAG_BYTES = 16;

/** The list rpc a token belongs to: its own method, or its path. */
type List = Pick<MethodInfo, "path"> | string;
const pathOf = (list: List) => (typeof list === "string" ? list : list.path);

/**
 * An opaque token for the page after `cursor` of `list` (the rpc serving it, usually
 * `ctx.method`), valid only for that rpc with the same `filter`: two lists of one service share
 * the secret, and a cursor means nothing in another list.
 */
export function encodePageToken(list: List, cursor: number, filter: unknown = null): string {
  return sealText(JSON.stringify({ l: pathOf(list), c: cursor, f: filter }));
}

/** `text` encrypted and authenticated with the page-token key, as a page token carries it. */
export function sealText(text: string): string {
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv("aes-256-gcm", sealingKey(), iv);
  const sealed = Buffer.concat([cipher.update(text), cipher.final()]);
  return Buffer.concat([iv, sealed, cipher.getAuthTag()]).toString("base64url");
}

/** What a token holds, or undefined when this server did not seal it. */
function opened(token: string): unknown {
  if (token.length > 1024) return undefined;
  const bytes = Buffer.from(token, "base64url");
  // Only the text the server wrote: decoding skips stray characters and a last one's spare bits.
  if (bytes.length <= IV_BYTES + TAG_BYTES || bytes.toString("base64url") !== token) {
    return undefined;
  }
  try {
    const decipher = createDecipheriv("aes-256-gcm", sealingKey(), bytes.subarray(0, IV_BYTES));
    decipher.setAuthTag(bytes.subarray(bytes.length - TAG_BYTES));
    const text = Buffer.concat([
      decipher.update(bytes.subarray(IV_BYTES, bytes.length - TAG_BYTES)),
      decipher.final(),
    ]);
    return JSON.parse(text.toString());
  } catch {
    return undefined;
  }
}

/** A cursor our lists issue: the seq of the last row of a page, a positive integer. */
const isSeq = (cursor: unknown): cursor is number =>
  Number.isSafeInteger(cursor) && (cursor as number) > 0;

/** The cursor inside a token of `list`, undefined for an empty token, or "invalid". */
function cursorOf(list: List, token: string, filter: unknown): number | undefined | "invalid" {
  if (token === "") return undefined;
  const parsed = opened(token);
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) return "invalid";
  const { l, c, f } = parsed as { l?: unknown; c?: unknown; f?: unknown };
  if (l !== pathOf(list) || JSON.stringify(f) !== JSON.stringify(filter) || !isSeq(c)) {
    return "invalid";
  }
  return c;
}

/**
 * The page a list call asks for, as its store reads it: at most `limit` rows, after the row
 * `after` (or the first), in at most `bytes` (pageBytesOf); and the token of the page after it.
 */
export interface RequestedPage {
  limit: number;
  after: number | undefined;
  bytes: number;
  /** The next page's token, given the seq the store says it starts after; "" when there is none. */
  tokenAfter(nextSeq: number | undefined): string;
}

/**
 * The page a list call asks for, after checking its request with the request's other fields in
 * `v`: throws one INVALID_ARGUMENT naming each
 * problem. A negative `page_size` is one (0 means `fallback`, more than `max` means `max`), and so
 * is a `page_token` that was not sealed here, was issued by another list or for another filter,
 * or holds anything but a seq (reason INVALID_PAGE_TOKEN when it is the only one): a token that
 * opens does not make its content trusted input.
 */
export function requestedPage(
  v: Violations,
  ctx: Pick<CallContext, "method" | "metadata">,
  request: { pageSize: number; pageToken: string },
  filter: unknown = null,
  fallback = 50,
  max = 1000,
): RequestedPage {
  const list = ctx.method;
  if (request.pageSize < 0) v.add("page_size", "must not be negative");
  const after = cursorOf(list, request.pageToken, filter);
  if (after === "invalid") {
    v.add("page_token", "was not issued by a previous call with this filter", "INVALID_PAGE_TOKEN");
  }
  v.throwIfAny();
  const limit = request.pageSize === 0 ? fallback : Math.min(request.pageSize, max);
  return {
    limit,
    after: after as number | undefined,
    bytes: pageBytesOf(ctx),
    tokenAfter: (nextSeq) => (nextSeq ? encodePageToken(list, nextSeq, filter) : ""),
  };
}

/**
 * The metadata key a caller asks a list call's page to keep under fewer bytes than PAGE_BYTES
 * with: the edge does for REST and Connect, whose replies it holds whole.
 */
export const PAGE_BYTES_KEY = "shopmesh-page-bytes";

/**
 * The bytes a page of this call may hold: PAGE_BYTES, or what the caller asked with
 * PAGE_BYTES_KEY if less, down to MIN_PAGE_BYTES. A value that is not a number is not asked.
 */
export function pageBytesOf(ctx: Pick<CallContext, "metadata">): number {
  const [asked] = ctx.metadata.get(PAGE_BYTES_KEY);
  const bytes = typeof asked === "string" && /^\d{1,10}$/.test(asked) ? Number(asked) : PAGE_BYTES;
  return Math.min(PAGE_BYTES, Math.max(MIN_PAGE_BYTES, bytes));
}
