import type { Money } from "../gen/ts/shop/type/v1/money.js";
import { readInteger } from "./db/index.js";
import { errors } from "./errors.js";
import type { Violations } from "./validate.js";

/**
 * The largest amount shop.type.v1.Money may carry, prices and totals alike: 2^53 - 1, so that
 * every runtime, JSON parsers included, holds it exactly. Arithmetic on amounts is BigInt.
 */
export const MAX_AMOUNT = BigInt(Number.MAX_SAFE_INTEGER);

/** ISO 4217 codes in use, as the runtime's ICU data lists them: maintained upstream, not here. */
const CURRENCIES = new Set(Intl.supportedValuesOf("currency"));

/** A required, non-negative amount in an ISO 4217 currency. */
export function checkMoney(v: Violations, field: string, money: Money | undefined): void {
  if (!money) {
    v.add(field, "is required");
    return;
  }
  if (!CURRENCIES.has(money.currencyCode)) {
    v.add(`${field}.currency_code`, "must be an ISO 4217 currency code in use, such as EUR");
  }
  let amount: bigint | undefined;
  try {
    amount = BigInt(money.amountMinor);
  } catch {
    amount = undefined;
  }
  if (amount === undefined || amount < 0n || amount > MAX_AMOUNT) {
    v.add(`${field}.amount_minor`, `must be between 0 and ${MAX_AMOUNT}`);
  }
}

/** A stored amount exactly, or undefined when it is not an integer within Money's range. */
export function readAmount(value: unknown): bigint | undefined {
  const amount = readInteger(value);
  return amount !== undefined && amount >= 0n && amount <= MAX_AMOUNT ? amount : undefined;
}

/** Money for a stored amount; undefined when the amount cannot be stated exactly. */
export function moneyOf(currencyCode: string, stored: unknown): Money | undefined {
  const amount = readAmount(stored);
  return amount === undefined ? undefined : { currencyCode, amountMinor: amount.toString() };
}

/**
 * The sum of quantity × unit price over lines, exactly, refused with FAILED_PRECONDITION
 * (reason TOTAL_TOO_LARGE) when it would pass MAX_AMOUNT.
 */
export function totalOf(
  currencyCode: string,
  lines: readonly { quantity: number; unitPriceMinor: bigint }[],
): bigint {
  const total = lines.reduce((sum, line) => sum + line.unitPriceMinor * BigInt(line.quantity), 0n);
  if (total > MAX_AMOUNT) {
    throw errors.failedPrecondition(
      "TOTAL_TOO_LARGE",
      `the total would be ${total} ${currencyCode}, more than the largest amount ${MAX_AMOUNT}`,
      { metadata: { currency_code: currencyCode, max_amount_minor: String(MAX_AMOUNT) } },
    );
  }
  return total;
}
