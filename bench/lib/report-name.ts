import { existsSync } from "node:fs";
import path from "node:path";

/**
 * The name of a new report in `dir`: `2025-01-31` (or `2025-01-31-latency` for a `kind`), then
 * `-2`, `-3` … once that name is taken, so a second run on a day never replaces a committed one.
 */
export function reportName(dir: string, date: Date, kind?: string): string {
  const stem = date.toISOString().slice(0, 10) + (kind ? `-${kind}` : "");
  for (let i = 1; ; i++) {
    const name = i === 1 ? stem : `${stem}-${i}`;
    if (![".md", ".json", ".svg"].some((ext) => existsSync(path.join(dir, name + ext)))) {
      return name;
    }
  }
}
