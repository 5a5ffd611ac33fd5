import { clipText, errors } from "./errors.js";

// An error status must fit in HTTP/2 trailers: a request with thousands of bad fields, or a
// 1 MB field name, must not echo all of it back.
const MAX_VIOLATIONS = 20;
const MAX_TEXT = 200;
const clip = (text: string) => clipText(text, MAX_TEXT);

/**
 * Only spaces of any kind and characters that show nothing: formatting characters (zero-width,
 * bidi controls), those Unicode says to ignore where unsupported (Hangul fillers, variation
 * selectors, a grapheme joiner) and the blank braille pattern.
 */
const BLANK = /^[\s\p{Cf}\p{Default_Ignorable_Code_Point}\u2800]*$/u;
/** Control characters, and the line and paragraph separators, which break a line as well. */
const CONTROL = /[\p{Cc}\u2028\u2029]/u;

/**
 * The code points in `text`, exactly up to `limit`; any count above `limit` means "more". A 1 MB
 * string is known to be too long without counting all of it.
 */
export function codePoints(text: string, limit: number): number {
  // A code point is one or two UTF-16 units.
  if (text.length > 2 * limit) return limit + 1;
  let count = 0;
  for (const _ of text) if (++count > limit) break;
  return count;
}

/**
 * Collects field violations so that one INVALID_ARGUMENT names every bad field at once.
 * Field paths use the proto's snake_case names, as clients see them.
 */
export class Violations {
  private readonly list: { field: string; description: string }[] = [];
  private reason = "INVALID_ARGUMENT";

  /** `reason`: the ErrorInfo's reason when every violation has it; INVALID_ARGUMENT otherwise. */
  add(field: string, description: string, reason = "INVALID_ARGUMENT"): this {
    if (this.list.length < MAX_VIOLATIONS) {
      this.list.push({ field: clip(field), description: clip(description) });
      if (this.list.length === 1) this.reason = reason;
      else if (reason !== this.reason) this.reason = "INVALID_ARGUMENT";
    }
    return this;
  }

  /**
   * A string of `min` to `max` characters (min 1 means required). A character is a Unicode code
   * point, as the proto comments count them: an emoji is one, not two UTF-16 units. U+0000 is
   * refused everywhere: PostgreSQL cannot store it in text, and no name or id needs it.
   */
  text(field: string, value: string, max: number, min = 1): this {
    const length = codePoints(value, Math.max(max, min));
    if (length < min) {
      return this.add(field, min === 1 ? "is required" : `must be at least ${min} characters`);
    }
    if (length > max) return this.add(field, `must be at most ${max} characters`);
    if (value.includes("\u0000")) this.add(field, "must not contain the NUL character (U+0000)");
    return this;
  }

  /**
   * A name shown to people: `text` of 1 to `max` characters that is not blank (only spaces or
   * invisible formatting characters) and holds no control character such as a line break.
   */
  name(field: string, value: string, max: number): this {
    const before = this.list.length;
    this.text(field, value, max);
    if (this.list.length > before) return this;
    if (BLANK.test(value)) return this.add(field, "must not be blank");
    if (CONTROL.test(value)) {
      this.add(field, "must not contain control characters, such as a line break or a tab");
    }
    return this;
  }

  /** An id: required, at most 64 characters. */
  id(field: string, value: string): this {
    return this.text(field, value, 64);
  }

  /** An integer within [min, max]. */
  range(field: string, value: number, min: number, max: number): this {
    if (!Number.isInteger(value) || value < min || value > max) {
      this.add(field, `must be between ${min} and ${max}`);
    }
    return this;
  }

  /** An update_mask: at least one path, each one of `allowed`. */
  mask(paths: readonly string[], allowed: readonly string[]): this {
    if (paths.length === 0) this.add("update_mask", "must name at least one field");
    for (const path of paths) {
      if (!allowed.includes(path)) {
        this.add("update_mask", `"${path}" is not one of ${allowed.join(", ")}`);
      }
    }
    return this;
  }

  /** Throws INVALID_ARGUMENT with a BadRequest detail when anything was added. */
  throwIfAny(): void {
    if (this.list.length === 0) return;
    const error = errors.invalidArgument(this.list);
    error.details.reason = this.reason;
    throw error;
  }
}

/** The range google.protobuf.Duration allows: about 10,000 years either way. */
const MAX_DURATION_SECONDS = 315_576_000_000n;

/**
 * A google.protobuf.Duration in milliseconds, or undefined (with a violation) when it breaks the
 * type's own rules: seconds within ±315,576,000,000, nanos within ±999,999,999, and both of one
 * sign when both are set.
 */
export function durationMs(
  v: Violations,
  field: string,
  duration: { seconds: string; nanos: number },
): number | undefined {
  let seconds: bigint;
  try {
    seconds = BigInt(duration.seconds);
  } catch {
    seconds = MAX_DURATION_SECONDS + 1n;
  }
  const { nanos } = duration;
  const valid =
    seconds >= -MAX_DURATION_SECONDS &&
    seconds <= MAX_DURATION_SECONDS &&
    Number.isInteger(nanos) &&
    Math.abs(nanos) <= 999_999_999 &&
    !(seconds > 0n && nanos < 0) &&
    !(seconds < 0n && nanos > 0);
  if (!valid) {
    v.add(field, "is not a valid Duration: nanos within ±999,999,999, of the sign of seconds");
    return undefined;
  }
  return Number(seconds) * 1000 + Math.trunc(nanos / 1e6);
}

/** Starts a check; finish it with `.throwIfAny()`. */
export const check = () => new Violations();
