/**
 * The benchmarks' plots, drawn from the data files the benchmarks write: `npm run bench:serve`
 * writes docs/data/serving.json (throughput and TPOT against concurrency), `npm run bench`
 * docs/data/bench.json (decode against the memory roofline). Each plot is a function of its data
 * file alone, so scripts/draw-guide-diagrams.ts redraws them all and test/guide-links.test.ts
 * checks that the committed SVGs are what their data gives.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { Svg } from "./svg.js";

export interface Percentiles {
  p50: number;
  p99: number;
}

/** One concurrency level of one workload on one server, as bench-serve measures it. */
export interface ServingRow {
  engine: string;
  workload: string;
  concurrency: number;
  requests: number;
  seconds: number;
  outputPerSecond: number;
  totalPerSecond: number;
  requestsPerSecond: number;
  ttftMs: Percentiles;
  tpotMs: Percentiles;
  itlMs: Percentiles;
  /** Our server only: from /metrics. */
  peakKvBlocks?: number;
  prefixHitRate?: number;
  failed: number;
}

/** One model on both engines, as bench measures it (the columns of its table). */
export interface BenchRow {
  model: string;
  format: string;
  /** Storage types of the weight matrices, most bytes first, joined by "+". */
  type: string;
  /** "native amx", "native avx512", "ts". */
  on: string;
  prefillTokensPerSecond: number;
  decodeTokensPerSecond: number;
  ttftMs: number;
  loadMs: number;
  peakRssMB: number;
  /** Bytes of every weight matrix one decode step reads, LM head included. */
  weightGBPerToken: number;
  decodeGBps: number;
  /** The streaming-read probe in the same process; null without the native kernels. */
  probeGBps: number | null;
  /** llama.cpp (node-llama-cpp) on the same GGUF file; absent for formats it cannot read. */
  llamaCpp?: { prefillTokensPerSecond: number; decodeTokensPerSecond: number; ttftMs: number; loadMs: number; peakRssMB: number };
}

/** A benchmark's data file: where the figures come from, how they were measured, and the rows. */
export interface PlotData<Row> {
  source: string;
  run: Record<string, string | number>;
  rows: Row[];
}

export type ServingData = PlotData<ServingRow>;
export type BenchData = PlotData<BenchRow>;

/** The workload the serving plot shows (bench-serve measures it at every concurrency level). */
export const SERVING_PLOT_WORKLOAD = "prompt ≈110, 64 generated";

/** A plot: its data file, its SVG (both relative to the project root) and how it is drawn. */
export interface Plot<Data> {
  data: string;
  svg: string;
  draw(data: Data): string;
}

export const SERVING_PLOT: Plot<ServingData> = {
  data: "docs/data/serving.json",
  svg: "docs/serving.svg",
  draw: (d) => servingPlot(d, SERVING_PLOT_WORKLOAD),
};
export const ROOFLINE_PLOT: Plot<BenchData> = { data: "docs/data/bench.json", svg: "docs/decode-roofline.svg", draw: rooflinePlot };
export const PLOTS: readonly Plot<unknown>[] = [SERVING_PLOT, ROOFLINE_PLOT];

export function readData(path: string): unknown {
  return JSON.parse(readFileSync(path, "utf8"));
}

/** Writes a data file; JSON.stringify with two-space indents is what Prettier keeps, as the rows hold no arrays of plain values. */
export function writeData(path: string, data: PlotData<unknown>): void {
  writeFileSync(path, JSON.stringify(data, null, 2) + "\n");
}

const COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

/** Output tokens/s (solid, left axis) and TPOT p50 (dashed, right axis) against concurrency, for each engine. */
export function servingPlot(data: ServingData, workload: string): string {
  const W = 640;
  const H = 300;
  const pad = { l: 60, r: 60, t: 48, b: 48 };
  const rows = data.rows.filter((r) => r.workload === workload && Number.isFinite(r.outputPerSecond) && Number.isFinite(r.tpotMs.p50));
  const levels = [...new Set(rows.map((r) => r.concurrency))].sort((a, b) => a - b);
  const engines = [...new Set(rows.map((r) => r.engine))];
  const maxOut = Math.max(1, ...rows.map((r) => r.outputPerSecond)) * 1.1;
  const maxTpot = Math.max(1, ...rows.map((r) => r.tpotMs.p50)) * 1.1;
  const x = (c: number): number => pad.l + (levels.length < 2 ? 0 : (levels.indexOf(c) / (levels.length - 1)) * (W - pad.l - pad.r));
  const yOut = (v: number): number => H - pad.b - (v / maxOut) * (H - pad.t - pad.b);
  const yTpot = (v: number): number => H - pad.b - (v / maxTpot) * (H - pad.t - pad.b);
  const svg = new Svg(W, H);
  svg.text(W / 2, 16, `${workload}: output tokens/s (solid, left) and TPOT p50 ms (dashed, right)`, { "text-anchor": "middle" });
  svg.text(W / 2, 32, `against concurrent clients; ${data.run.model}, ${data.run.threads} threads, ${data.run.date}`, {
    "text-anchor": "middle",
    "font-size": 11,
  });
  svg
    .line(pad.l, H - pad.b, W - pad.r, H - pad.b)
    .line(pad.l, pad.t, pad.l, H - pad.b)
    .line(W - pad.r, pad.t, W - pad.r, H - pad.b);
  for (const c of levels) svg.text(x(c), H - pad.b + 16, String(c), { "text-anchor": "middle" });
  for (let i = 0; i <= 4; i++) {
    svg.text(pad.l - 6, yOut((maxOut * i) / 4) + 4, ((maxOut * i) / 4).toFixed(0), { "text-anchor": "end" });
    svg.text(W - pad.r + 6, yTpot((maxTpot * i) / 4) + 4, ((maxTpot * i) / 4).toFixed(0));
  }
  engines.forEach((engine, e) => {
    const mine = levels.map((c) => rows.find((r) => r.engine === engine && r.concurrency === c)).filter((r) => r !== undefined);
    const stroke = COLOURS[e % COLOURS.length];
    svg.polyline(
      mine.map((r) => [x(r.concurrency), yOut(r.outputPerSecond)]),
      { stroke, "stroke-width": 2 },
    );
    svg.polyline(
      mine.map((r) => [x(r.concurrency), yTpot(r.tpotMs.p50)]),
      { stroke, "stroke-width": 2, "stroke-dasharray": "6 4" },
    );
    for (const r of mine) svg.circle(x(r.concurrency), yOut(r.outputPerSecond), 4, { fill: stroke });
    for (const r of mine) svg.circle(x(r.concurrency), yTpot(r.tpotMs.p50), 4, { fill: "white", stroke, "stroke-width": 2 });
    svg.text(pad.l + 10, pad.t + 14 + 16 * e, engine, { fill: stroke });
  });
  svg.text(W / 2, H - pad.b + 34, "concurrent clients", { "text-anchor": "middle" });
  return svg.toString();
}

/** The median of the run's bandwidth probes, the roof the plot draws. */
export function medianProbe(rows: readonly BenchRow[]): number | undefined {
  const probes = rows.map((r) => r.probeGBps).filter((p): p is number => p !== null);
  if (probes.length === 0) return undefined;
  const sorted = [...probes].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

/**
 * Decode tokens/s against the weight bytes a token reads, on log axes, with the memory roof:
 * at B GB/s a step that reads w GB of weights takes at least w / B seconds, so tokens/s ≤ B / w.
 */
export function rooflinePlot(data: BenchData): string {
  const W = 720;
  const H = 440;
  const pad = { l: 64, r: 150, t: 44, b: 60 };
  const [x0, x1] = [0.2, 10];
  const [y0, y1] = [2, 300];
  const lx = (v: number): number => pad.l + (Math.log(v / x0) / Math.log(x1 / x0)) * (W - pad.l - pad.r);
  const ly = (v: number): number => H - pad.b - (Math.log(v / y0) / Math.log(y1 / y0)) * (H - pad.t - pad.b);
  const svg = new Svg(W, H);
  svg.text(W / 2, 16, "Decode tokens/s against the weight bytes one token reads, and the memory roof", { "text-anchor": "middle" });
  svg.text(W / 2, 30, `${data.run.date}, ${data.run.cpu}, ${data.run.threads} threads`, { "text-anchor": "middle", "font-size": 11 });
  svg.rect(pad.l, pad.t, W - pad.l - pad.r, H - pad.t - pad.b, { fill: "none", stroke: "black" });
  for (const v of [0.25, 0.5, 1, 2, 4, 8]) {
    svg.line(lx(v), H - pad.b, lx(v), H - pad.b + 4).text(lx(v), H - pad.b + 16, String(v), { "text-anchor": "middle" });
  }
  for (const v of [2, 5, 10, 20, 50, 100, 200]) {
    svg.line(pad.l - 4, ly(v), pad.l, ly(v)).text(pad.l - 8, ly(v) + 4, String(v), { "text-anchor": "end" });
    svg.line(pad.l, ly(v), W - pad.r, ly(v), { stroke: "#eee" });
  }
  svg.text((pad.l + W - pad.r) / 2, H - pad.b + 34, "GB of weights read per decoded token (log)", { "text-anchor": "middle" });
  svg.text(16, (pad.t + H - pad.b) / 2, "decode tokens/s (log)", {
    "text-anchor": "middle",
    transform: `rotate(-90 16 ${(pad.t + H - pad.b) / 2})`,
  });
  const probe = medianProbe(data.rows);
  if (probe !== undefined) {
    const from = Math.max(x0, probe / y1);
    const to = Math.min(x1, probe / y0);
    svg.line(lx(from), ly(probe / from), lx(to), ly(probe / to), { stroke: "#888", "stroke-width": 2, "stroke-dasharray": "8 4" });
    svg.text(lx(0.3) + 6, ly(probe / 0.3) - 6, `roof: ${probe} GB/s ÷ GB per token (median probe)`, { fill: "#555", "font-size": 11 });
  }
  for (const r of data.rows) {
    const cx = lx(r.weightGBPerToken);
    svg.circle(cx, ly(r.decodeTokensPerSecond), 5, { fill: COLOURS[0] });
    if (r.llamaCpp)
      svg.rect(cx - 4, ly(r.llamaCpp.decodeTokensPerSecond) - 4, 8, 8, { fill: "none", stroke: COLOURS[1], "stroke-width": 2 });
  }
  // Labels in the right margin, one per model, joined to its point: the points crowd too much for labels beside them.
  const sorted = [...data.rows].sort((a, b) => b.decodeTokensPerSecond - a.decodeTokensPerSecond);
  sorted.forEach((r, i) => {
    const y = pad.t + 10 + i * ((H - pad.t - pad.b - 10) / Math.max(1, sorted.length - 1));
    const name = r.model.replace(/\.gguf$/, "").replace(/^qwen2-/, "");
    svg.line(lx(r.weightGBPerToken), ly(r.decodeTokensPerSecond), W - pad.r + 4, y, { stroke: "#ccc" });
    svg.text(W - pad.r + 8, y + 4, `${name} ${r.decodeTokensPerSecond}`, { "font-size": 11 });
  });
  svg.circle(pad.l + 16, H - 14, 5, { fill: COLOURS[0] }).text(pad.l + 26, H - 10, "tiny-llm");
  svg
    .rect(pad.l + 96, H - 18, 8, 8, { fill: "none", stroke: COLOURS[1], "stroke-width": 2 })
    .text(pad.l + 110, H - 10, "llama.cpp, same file");
  return svg.toString();
}
