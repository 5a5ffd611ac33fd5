// The small pieces several parts of Envoy's config share: typed extension configs, CEL filters,
// header matchers, and filters skipped for the requests a matcher takes.

export const typed = (type: string, body: Record<string, unknown> = {}) => ({
  "@type": `type.googleapis.com/${type}`,
  ...body,
});

/**
 * An access log filter, which local reply mappers take too: a CEL expression over the request,
 * Envoy's response and the stream's metadata.
 */
export const when = (expression: string) => ({
  extension_filter: {
    name: "envoy.access_loggers.extension_filters.cel",
    typed_config: typed("envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter", {
      expression,
    }),
  },
});

const headerInput = (name: string) => ({
  name: `request header ${name}`,
  typed_config: typed("envoy.type.matcher.v3.HttpRequestHeaderMatchInput", { header_name: name }),
});

export const headerMatches = (name: string, value_match: Record<string, unknown>) => ({
  single_predicate: { input: headerInput(name), value_match },
});

export const not = (predicate: object) => ({ not_matcher: predicate });

/**
 * `filter`, which Envoy skips for the requests `predicate` matches. It sees the request as the
 * filters before it left it.
 */
export function skippedFor(predicate: object, filter: { name: string; typed_config: object }) {
  return {
    name: filter.name,
    typed_config: typed("envoy.extensions.common.matching.v3.ExtensionWithMatcher", {
      extension_config: filter,
      xds_matcher: {
        matcher_list: {
          matchers: [
            {
              predicate,
              on_match: {
                action: {
                  name: "skip",
                  typed_config: typed(
                    "envoy.extensions.filters.common.matcher.action.v3.SkipFilter",
                  ),
                },
              },
            },
          ],
        },
      },
    }),
  };
}
