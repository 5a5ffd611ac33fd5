// The REST bindings of an rpc's google.api.http rule, as the edge's Lua filter matches them.

/** A google.api.http rule as protobuf-es reads it from the descriptor set. */
export interface HttpRule {
  pattern: { case?: string; value?: unknown };
  body: string;
  responseBody?: string;
  additionalBindings?: HttpRule[];
}

/** One way in: an HTTP method, a path template, the field the body sets, and the reply's field. */
export interface Binding {
  verb: string;
  template: string;
  body: string;
  responseBody: string;
}

/** The rule's own binding and each of its additional_bindings: the transcoder serves them all. */
export function bindingsOf(rule: HttpRule): Binding[] {
  const { case: kind, value } = rule.pattern;
  const custom = kind === "custom" ? (value as { kind?: string; path?: string }) : undefined;
  const verb = custom ? custom.kind : kind;
  const template = custom ? custom.path : value;
  const { body, responseBody = "" } = rule;
  const own =
    verb && typeof template === "string" && template !== ""
      ? [{ verb: verb.toUpperCase(), template, body, responseBody }]
      : [];
  return [...own, ...(rule.additionalBindings ?? []).flatMap(bindingsOf)];
}

const LUA_MAGIC = /[\^$()%.[\]*+\-?]/g;

/** One `/`-separated run of a template: `*` is one segment, `**` any number, the rest literal. */
const segments = (text: string) =>
  text
    .split("/")
    .map((segment) =>
      segment === "**" ? ".+" : segment === "*" ? "[^/]+" : segment.replace(LUA_MAGIC, "%$&"),
    )
    .join("/");

/**
 * A Lua pattern matching the paths of a template: `{field}` is one segment, `{field=a/*}` its own
 * template (`/v1/{name=reviews/*}` is `^/v1/reviews/[^/]+/?$`). A trailing slash matches too, as
 * the transcoder serves the path with one. `capture`: each variable captured, in order
 * (`/users/{user_id}` is `^/users/([^/]+)/?$`).
 */
export function luaPatternOf(template: string, { capture = false } = {}): string {
  let pattern = "";
  for (const part of template.matchAll(/\{([^}=]+)(?:=([^}]*))?\}|[^{]+/g)) {
    if (part[1] === undefined) {
      pattern += segments(part[0]);
      continue;
    }
    const variable = segments(part[2] ?? "*");
    pattern += capture ? `(${variable})` : variable;
  }
  return `^${pattern}/?$`;
}

/** The fields a template's variables set: `{user_id}` and `{name=reviews/*}` give user_id, name. */
export const variablesOf = (template: string) =>
  [...template.matchAll(/\{([^}=]+)/g)].map((match) => match[1] as string);
