// Reading one sample out of a service's Prometheus text, as tests check what it counted.

/**
 * The value of the first sample of `metric` whose labels include every one of `labels`, or
 * undefined when there is none.
 */
export function sampleValue(
  text: string,
  metric: string,
  labels: Readonly<Record<string, string>>,
): number | undefined {
  const wanted = Object.entries(labels).map(([name, value]) => `${name}="${value}"`);
  const row = text
    .split("\n")
    .find((line) => line.startsWith(`${metric}{`) && wanted.every((label) => line.includes(label)));
  return row === undefined ? undefined : Number(row.split(" ").at(-1));
}
