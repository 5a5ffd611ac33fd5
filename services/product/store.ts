import { ReservationState } from "../../gen/ts/shop/product/v1/inventory.js";
import type { Product } from "../../gen/ts/shop/product/v1/product.js";
import {
  inTransaction,
  integerBinding,
  type Knex,
  pageBySeq,
  readInteger,
  readTime,
  type Sql,
  sqlOf,
  textBytes,
  updateTimeOf,
} from "../../kit/db/index.js";
import { errors } from "../../kit/errors.js";
import { moneyOf } from "../../kit/money.js";

export interface ProductRow {
  seq: number;
  product_id: string;
  name: string;
  description: string;
  currency_code: string;
  /** An integer; read with moneyOf (drivers differ in how they return one). */
  price_minor: unknown;
  stock_quantity: number;
  /** Units in stock, held or sold (migration 0005); trusted while counted_stock is the stock. */
  owned_units?: unknown;
  /** The stock as this build last moved it; an older build's change leaves it behind. */
  counted_stock?: number | null;
  /** Milliseconds since the epoch; read with readTime, as every bigint. */
  create_time: number | string;
  update_time: number | string;
}

/** The fields of a product a caller sets. */
export interface ProductFields {
  name: string;
  description: string;
  currencyCode: string;
  priceMinor: string;
  stockQuantity: number;
}

export const toProduct = (row: ProductRow): Product => ({
  productId: row.product_id,
  name: row.name,
  description: row.description,
  price: moneyOf(row.currency_code, row.price_minor),
  stockQuantity: row.stock_quantity,
  createTime: new Date(readTime(row.create_time)),
  updateTime: new Date(readTime(row.update_time)),
});

/** The most units a product may have in stock; the database enforces it with a CHECK. */
export const MAX_STOCK = 1_000_000_000;

/**
 * Owned units up to which UpdateProduct trusts the product's count without summing its
 * reservations. Near the bound, where a count wrong by any margin would matter, it sums them.
 */
const TRUSTED_OWNED = BigInt(MAX_STOCK * 0.9);

export const stockLimit = (productId: string, description: string) =>
  errors.failedPrecondition("STOCK_LIMIT_EXCEEDED", description, {
    preconditionViolations: [{ type: "STOCK_LIMIT", subject: productId, description }],
  });

export const productNotFound = (productId: string) =>
  errors.notFound("PRODUCT_NOT_FOUND", `product ${productId} does not exist`, {
    product_id: productId,
  });

/**
 * The catalogue: the only code that writes a product's own fields. The stock that reservations
 * take and give back is InventoryStore's (inventory/).
 */
export class ProductStore {
  /** GetProduct's read, in plain SQL (kit/db/sql.ts). */
  private readonly sql: Sql;

  /** The service's database: `reads` for reads outside a transaction (kit/service.ts). */
  constructor(private readonly env: { db: Knex; reads: Knex }) {
    this.sql = sqlOf(env.reads);
  }

  async insert(productId: string, fields: ProductFields): Promise<Product> {
    const now = Date.now();
    const row = {
      product_id: productId,
      name: fields.name,
      description: fields.description,
      currency_code: fields.currencyCode,
      price_minor: integerBinding(BigInt(fields.priceMinor)),
      stock_quantity: fields.stockQuantity,
      owned_units: fields.stockQuantity,
      counted_stock: fields.stockQuantity,
      create_time: now,
      update_time: now,
    };
    await this.env.db("products").insert(row);
    return toProduct(row as ProductRow);
  }

  async get(productId: string): Promise<Product> {
    const [row] = await this.sql.query<ProductRow>("SELECT * FROM products WHERE product_id = ?", [
      productId,
    ]);
    if (!row) throw productNotFound(productId);
    return toProduct(row);
  }

  async list(
    limit: number,
    afterSeq: number | undefined,
    bytes: number | undefined,
    { inStockOnly }: { inStockOnly: boolean },
  ): Promise<{ products: Product[]; nextSeq?: number }> {
    const query = this.env.reads<ProductRow>("products");
    if (inStockOnly) query.where("stock_quantity", ">", 0);
    const { items, nextSeq } = await pageBySeq(query, limit, {
      from: afterSeq,
      items: (rows: ProductRow[]) => rows.map(toProduct),
      // An encoded product is its text plus about 100 bytes of ids, numbers and times.
      sizeOf: (product) => textBytes(product.name, product.description) + 128,
      bytes,
      ...(inStockOnly && { unfiltered: () => this.env.reads("products") }),
    });
    return { products: items, ...(nextSeq !== undefined && { nextSeq }) };
  }

  async update(productId: string, changes: Partial<ProductFields>): Promise<Product> {
    const fields: Partial<ProductRow> = {};
    if (changes.name !== undefined) fields.name = changes.name;
    if (changes.description !== undefined) fields.description = changes.description;
    if (changes.currencyCode !== undefined) fields.currency_code = changes.currencyCode;
    if (changes.priceMinor !== undefined) {
      fields.price_minor = integerBinding(BigInt(changes.priceMinor));
    }
    const stock = changes.stockQuantity;
    if (stock !== undefined) fields.stock_quantity = stock;
    const patch = {
      ...fields,
      update_time: updateTimeOf(this.env.db, fields, Date.now()),
      // What the stock gains or loses, the product owns: held and sold units stay as they were.
      // A stock an older build changed since (counted_stock left behind) voids the count.
      ...(stock !== undefined && {
        owned_units: this.env.db.raw(
          "CASE WHEN counted_stock = stock_quantity THEN owned_units + (? - stock_quantity) END",
          [stock],
        ),
        counted_stock: stock,
      }),
    };
    // The row comes back from the update itself: nothing can fail after the transaction.
    return inTransaction(this.env.db, async (trx) => {
      const [row]: ProductRow[] = await trx("products")
        .where({ product_id: productId })
        .update(patch, "*");
      if (!row) throw productNotFound(productId);
      if (stock === undefined) return toProduct(row);
      // Units held or sold may all come back (expiry, release, a cancelled order): the new stock
      // must leave room for them under MAX_STOCK, or a later restock could not happen.
      const owned = readInteger(row.owned_units);
      if (owned !== undefined && owned >= BigInt(stock) && owned <= TRUSTED_OWNED) {
        return toProduct(row);
      }
      const outstanding = await unitsOut(trx, productId);
      if (stock + outstanding > MAX_STOCK) {
        throw stockLimit(
          productId,
          `stock ${stock} plus the ${outstanding} units held or sold that may come back passes ${MAX_STOCK}`,
        );
      }
      // Counted again: the product's count is right from here on, whoever wrote it before.
      await trx("products")
        .where({ product_id: productId })
        .update({ owned_units: stock + outstanding });
      return toProduct(row);
    });
  }
}

/** The units of a product's reservations that are held or committed, summed over all of them. */
async function unitsOut(trx: Knex.Transaction, productId: string): Promise<number> {
  const [held] = await trx("reservation_lines as l")
    .join("reservations as r", "r.reservation_id", "l.reservation_id")
    .where("l.product_id", productId)
    .whereIn("r.state", [
      ReservationState.RESERVATION_STATE_HELD,
      ReservationState.RESERVATION_STATE_COMMITTED,
    ])
    .sum({ units: "l.quantity" });
  return Number(readInteger(held?.units) ?? 0);
}
