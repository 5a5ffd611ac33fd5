import type { Money } from "../gen/ts/shop/type/v1/money.js";
import type { Violations } from "./validate.js";

/** Amounts are stored as SQLite integers and read as JS numbers, so they stay below 2^53. */
const MAX_AMOUNT = BigInt(Number.MAX_SAFE_INTEGER);

/** A required, non-negative amount in an ISO 4217 currency. */
export function checkMoney(v: Violations, field: string, money: Money | undefined): void {
  if (!money) {
    v.add(field, "is required");
    return;
  }
  if (!/^[A-Z]{3}$/.test(money.currencyCode)) {
    v.add(`${field}.currency_code`, "must be an ISO 4217 code of three upper-case letters");
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
