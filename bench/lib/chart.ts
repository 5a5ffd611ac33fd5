// A hand-written SVG: two grouped bar charts, throughput and p99 latency, one group per target
// and one bar per concurrency level.
import type { RunResult } from "./results.js";

const COLORS = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948"];
const WIDTH = 960;
const PANEL_HEIGHT = 300;
const MARGIN = { left: 70, right: 20, top: 40, bottom: 60 };

const xml = (text: string) =>
  text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

/** A round step for about five gridlines up to `max`. */
function tickStep(max: number): number {
  if (max <= 0) return 1;
  const raw = max / 5;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => s >= raw);
  return step ?? 10 * magnitude;
}

const format = (value: number) =>
  value >= 100
    ? Math.round(value).toLocaleString("en-US")
    : value >= 10
      ? value.toFixed(1)
      : value.toFixed(2);

function panel(
  runs: readonly RunResult[],
  targets: readonly { id: string; label: string }[],
  levels: readonly number[],
  title: string,
  value: (run: RunResult) => number,
  top: number,
): string {
  const plotW = WIDTH - MARGIN.left - MARGIN.right;
  const plotH = PANEL_HEIGHT - MARGIN.top - MARGIN.bottom;
  const x0 = MARGIN.left;
  const y0 = top + MARGIN.top;
  const max = Math.max(0, ...runs.map(value));
  const step = tickStep(max);
  const yMax = Math.max(step, Math.ceil(max / step) * step);
  const y = (v: number) => y0 + plotH - (v / yMax) * plotH;
  const parts: string[] = [
    `<text x="${x0}" y="${top + 24}" font-size="15" font-weight="bold">${xml(title)}</text>`,
  ];
  for (let v = 0; v <= yMax + step / 2; v += step) {
    parts.push(
      `<line x1="${x0}" x2="${x0 + plotW}" y1="${y(v)}" y2="${y(v)}" stroke="#ddd"/>`,
      `<text x="${x0 - 6}" y="${y(v) + 4}" font-size="11" text-anchor="end">${format(v)}</text>`,
    );
  }
  const groupW = plotW / Math.max(1, targets.length);
  const barW = Math.min(36, (groupW * 0.8) / Math.max(1, levels.length));
  targets.forEach((target, gi) => {
    const groupX = x0 + gi * groupW + (groupW - barW * levels.length) / 2;
    levels.forEach((level, li) => {
      const run = runs.find((r) => r.target === target.id && r.concurrency === level);
      if (!run) return;
      const v = value(run);
      const bx = groupX + li * barW;
      const color = COLORS[li % COLORS.length];
      parts.push(
        `<rect x="${bx.toFixed(1)}" y="${y(v).toFixed(1)}" width="${(barW - 2).toFixed(1)}" height="${(y(0) - y(v)).toFixed(1)}" fill="${color}"><title>${xml(`${target.label} c=${level}: ${format(v)}`)}</title></rect>`,
        `<text x="${(bx + barW / 2 - 1).toFixed(1)}" y="${(y(v) - 3).toFixed(1)}" font-size="9" text-anchor="middle">${format(v)}</text>`,
      );
    });
    parts.push(
      `<text x="${(x0 + gi * groupW + groupW / 2).toFixed(1)}" y="${y0 + plotH + 18}" font-size="12" text-anchor="middle">${xml(target.label)}</text>`,
    );
  });
  parts.push(
    `<line x1="${x0}" x2="${x0 + plotW}" y1="${y(0)}" y2="${y(0)}" stroke="#333"/>`,
    `<line x1="${x0}" x2="${x0}" y1="${y0}" y2="${y0 + plotH}" stroke="#333"/>`,
  );
  return parts.join("\n");
}

/** Throughput (successful calls/s) and p99 latency (ms) per target and concurrency. */
export function chartSvg(
  runs: readonly RunResult[],
  targets: readonly { id: string; label: string }[],
  levels: readonly number[],
  subtitle: string,
): string {
  const height = 2 * PANEL_HEIGHT + 50;
  const legend = levels
    .map((level, i) => {
      const x = MARGIN.left + i * 90;
      return `<rect x="${x}" y="${height - 30}" width="12" height="12" fill="${COLORS[i % COLORS.length]}"/><text x="${x + 16}" y="${height - 20}" font-size="12">c=${level}</text>`;
    })
    .join("\n");
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="sans-serif">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    panel(runs, targets, levels, "Throughput (successful requests/s)", (r) => r.rps, 0),
    panel(runs, targets, levels, "p99 latency (ms)", (r) => r.latencyMs.p99, PANEL_HEIGHT),
    legend,
    `<text x="${WIDTH - MARGIN.right}" y="${height - 20}" font-size="11" text-anchor="end" fill="#555">${xml(subtitle)}</text>`,
    "</svg>",
    "",
  ].join("\n");
}
