// Small SVG pictures for the Status view: no chart library, just rectangles and text.
import { duration } from "./model.js";

const NS = "http://www.w3.org/2000/svg";

function svgEl(tag, attributes = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function picture(width, height, label) {
  const svg = svgEl("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label });
  svg.append(svgEl("title", {}, label));
  return svg;
}

function empty(text) {
  const p = document.createElement("p");
  p.className = "muted";
  p.textContent = text;
  return p;
}

// Horizontal bars: [{label, value, max?, note?, lost?}], one per line.
function horizontalBars(rows, label, { unit = (v) => String(v) } = {}) {
  const line = 22;
  const width = 360;
  const left = 130;
  const svg = picture(width, rows.length * line + 4, label);
  const top = Math.max(1, ...rows.map((row) => row.max ?? row.value ?? 0));
  rows.forEach((row, i) => {
    const y = i * line + 2;
    const span = width - left - 60;
    const full = ((row.max ?? row.value ?? 0) / top) * span;
    const filled = ((row.value ?? 0) / top) * span;
    svg.append(svgEl("text", { x: 0, y: y + 14 }, row.label.length > 20 ? `${row.label.slice(0, 19)}…` : row.label));
    if (row.max !== undefined) svg.append(svgEl("rect", { x: left, y: y + 3, width: full, height: 14, class: "lost" }));
    const bar = svgEl("rect", { x: left, y: y + 3, width: Math.max(filled, 1), height: 14, class: "bar" });
    bar.append(svgEl("title", {}, row.note || `${row.label}: ${unit(row.value)}`));
    svg.append(bar);
    svg.append(svgEl("text", { x: left + Math.max(full, filled) + 4, y: y + 14, class: "muted" }, unit(row.value)));
  });
  return svg;
}

export function healthChart(report) {
  if (!report) return empty("No health score yet: the scheduler computes one every 15 s.");
  const rows = report.components.map((c) => ({
    label: c.name.replace(/_/g, " "),
    value: c.contribution,
    max: c.weight,
    note: `${c.name}: ${c.value ?? "no data"} ${c.unit}; contributes ${c.contribution} of ${c.weight}`,
  }));
  const wrap = document.createElement("div");
  const worst = report.components.filter((c) => c.contribution < c.weight).map((c) => c.name.replace(/_/g, " "));
  const head = document.createElement("p");
  head.textContent = `Score ${report.score} of 100${report.stale ? " (stale: the scheduler is not computing it)" : ""}. `
    + (worst.length ? `Pulled down by: ${worst.join(", ")} (red is what each loses).` : "Every component is at full marks.");
  wrap.append(head, horizontalBars(rows, `health components: ${head.textContent}`, { unit: (v) => `${v}` }));
  return wrap;
}

export function rateChart(series) {
  if (!series || !series.length) return empty("No alerts received in the last hour.");
  const width = 360;
  const height = 120;
  const svg = picture(width, height + 16, `alerts per minute over the last ${series.length} minutes; latest ${series.at(-1).count}`);
  const top = Math.max(1, ...series.map((p) => p.count));
  const step = width / series.length;
  series.forEach((point, i) => {
    const h = (point.count / top) * height;
    const bar = svgEl("rect", { x: i * step, y: height - h, width: Math.max(step - 1, 1), height: Math.max(h, 0.5), class: "bar" });
    bar.append(svgEl("title", {}, `${new Date(point.minute * 1000).toISOString().slice(11, 16)} UTC: ${point.count}`));
    svg.append(bar);
  });
  svg.append(svgEl("line", { x1: 0, x2: width, y1: height, y2: height, class: "axis" }));
  svg.append(svgEl("text", { x: 0, y: height + 13, class: "muted" }, "-60 min"));
  svg.append(svgEl("text", { x: width - 30, y: height + 13, class: "muted" }, "now"));
  svg.append(svgEl("text", { x: 0, y: 11, class: "muted" }, `max ${top}/min`));
  return svg;
}

export function timingChart(analytics) {
  if (!analytics) return empty("No daily analytics yet: the scheduler computes each day after it ends.");
  const ack = analytics.time_to_acknowledge || {};
  const res = analytics.time_to_resolve || {};
  const rows = [
    { label: "MTTA (mean)", value: ack.mean_seconds ?? 0 },
    { label: "ack p95", value: ack.p95_seconds ?? 0 },
    { label: "MTTR (mean)", value: res.mean_seconds ?? 0 },
    { label: "resolve p95", value: res.p95_seconds ?? 0 },
  ];
  const wrap = document.createElement("div");
  const head = document.createElement("p");
  head.textContent = `${analytics.date}: ${analytics.alerts} alerts, ${analytics.occurrences} occurrences.`;
  wrap.append(head, horizontalBars(rows, `time to acknowledge and resolve on ${analytics.date}`, { unit: duration }));
  return wrap;
}

export function noisyChart(analytics) {
  const noisy = analytics?.top_noisy_fingerprints || [];
  if (!noisy.length) return empty("No noisy alerts.");
  return horizontalBars(
    noisy.map((n) => ({ label: n.name || n.fingerprint, value: n.occurrences, note: `${n.name} (${n.service || "no service"}): ${n.occurrences} occurrences in ${n.incidents} incidents` })),
    "noisiest alerts by occurrences",
  );
}

export function patternsChart(patterns) {
  if (!patterns) return empty("No pattern detection yet.");
  const kinds = [
    ["flapping", (p) => `${p.name} (${p.fired} fired, ${p.resolved} resolved)`],
    ["storms", (p) => `${p.service}: ${p.alerts} alerts vs ${p.baseline} expected`],
    ["noisy_sources", (p) => `${p.source}: ${Math.round(p.duplicate_ratio * 100)}% duplicates`],
    ["recurring", (p) => `${p.name} at ${p.hour_utc}:00 UTC on ${p.days.length} days`],
  ];
  const wrap = document.createElement("div");
  const head = document.createElement("p");
  head.textContent = patterns.detected_at ? `Detected at ${patterns.detected_at}.` : "Not run yet.";
  const rows = kinds.map(([kind, describe]) => ({
    label: kind.replace(/_/g, " "),
    value: (patterns[kind] || []).length,
    note: (patterns[kind] || []).map(describe).join("; ") || `no ${kind.replace(/_/g, " ")}`,
  }));
  wrap.append(head, horizontalBars(rows, "pattern findings by kind"));
  return wrap;
}
