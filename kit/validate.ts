import { errors } from "./errors.js";

// An error status must fit in HTTP/2 trailers: a request with thousands of bad fields, or a
// 1 MB field name, must not echo all of it back.
const MAX_VIOLATIONS = 20;
const MAX_TEXT = 200;
const clip = (text: string) => (text.length > MAX_TEXT ? `${text.slice(0, MAX_TEXT)}…` : text);

/**
 * Collects field violations so that one INVALID_ARGUMENT names every bad field at once.
 * Field paths use the proto's snake_case names, as clients see them.
 */
export class Violations {
  private readonly list: { field: string; description: string }[] = [];

  add(field: string, description: string): this {
    if (this.list.length < MAX_VIOLATIONS) {
      this.list.push({ field: clip(field), description: clip(description) });
    }
    return this;
  }

  /** A string of `min` to `max` characters (min 1 means required). */
  text(field: string, value: string, max: number, min = 1): this {
    if (value.length < min) {
      return this.add(field, min === 1 ? "is required" : `must be at least ${min} characters`);
    }
    if (value.length > max) this.add(field, `must be at most ${max} characters`);
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
    if (this.list.length > 0) throw errors.invalidArgument(this.list);
  }
}

/** Starts a check; finish it with `.throwIfAny()`. */
export const check = () => new Violations();
