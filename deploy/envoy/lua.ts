// Envoy's Lua filters: the files of lua/, with the tables the config generates put in front.

import { readFileSync } from "node:fs";
import { typed } from "./matchers.js";

/** A Lua filter: `definitions`, then the files of lua/ (a library first, then the filter). */
export const lua = (files: string | string[], definitions: Record<string, unknown>) => ({
  name: "envoy.filters.http.lua",
  typed_config: typed("envoy.extensions.filters.http.lua.v3.Lua", {
    default_source_code: {
      inline_string: [
        ...Object.entries(definitions).map(([name, value]) => `${name} = ${luaValue(value)}`),
        ...[files]
          .flat()
          .map((file) => readFileSync(new URL(`./lua/${file}`, import.meta.url), "utf8")),
      ].join("\n"),
    },
  }),
});

/** A Lua literal for JSON-like data. */
function luaValue(value: unknown): string {
  if (Array.isArray(value)) return `{ ${value.map(luaValue).join(", ")} }`;
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value).sort(([a], [b]) => a.localeCompare(b));
    return `{ ${entries.map(([key, inner]) => `[${JSON.stringify(key)}] = ${luaValue(inner)}`).join(", ")} }`;
  }
  return JSON.stringify(value);
}
