/**
 * Draws every picture of the guide from the code and data it shows: the diagrams in
 * docs/guide/img/ (attention's shapes and causal mask, GQA's head groups for Qwen2-0.5B's config,
 * the paged block tables of a real engine run with a shared prefix, the continuous-batching
 * timeline of the steps recorded in docs/guide/data/) and the benchmarks' plots from their data
 * files (scripts/plots.ts).
 *
 *   npm run build && node dist/scripts/draw-guide-diagrams.js [--out DIR]
 *
 * writes them under the project root, or under DIR with the same relative paths.
 * test/guide-links.test.ts draws them into a temporary folder and holds the committed files to it.
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { DEFAULT_SAMPLING, type RequestEvent, type StepTrace } from "../src/engine/api.js";
import { BatchForward, type Batch } from "../src/engine/batch-forward.js";
import { Engine } from "../src/engine/engine.js";
import { PagedKvCache } from "../src/engine/kv-cache.js";
import { SEQ_FIELDS } from "../src/kernels/kernels.js";
import { TsKernels } from "../src/kernels/ts-kernels.js";
import { Attention, causalMask } from "../src/layers/attention.js";
import { Embedding } from "../src/layers/embedding.js";
import { Linear } from "../src/layers/linear.js";
import { MLP } from "../src/layers/mlp.js";
import { RMSNorm } from "../src/layers/rms-norm.js";
import { RoPE } from "../src/layers/rope.js";
import { parseModelConfig, type ModelConfig } from "../src/models/config.js";
import { DecoderLayer, Transformer } from "../src/models/transformer.js";
import { Tensor } from "../src/tensor/tensor.js";
import { DenseWeight } from "../src/tensor/weight.js";
import { PRESETS, presetConfig } from "./make-random-checkpoint.js";
import { PLOTS, readData } from "./plots.js";
import { TRACE_FILE, TRACE_MODEL, TRACE_SERVER_ARGS } from "./record-batching-trace.js";
import { Svg } from "./svg.js";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

const BLUE = "#1f77b4";
const LIGHT_BLUE = "#aec7e8";
const ORANGE = "#ff7f0e";
const LIGHT_ORANGE = "#ffbb78";
const PURPLE = "#9467bd";
const GREY = "#d9d9d9";

/** Qwen2-0.5B's hyper-parameters, as config.json would give them. */
function qwen2Config(): ModelConfig {
  return parseModelConfig(presetConfig(PRESETS["qwen2-0.5b"]));
}

const shape = (names: string, values: number[]): string => `[${names}] = [${values.join(", ")}]`;

/** One layer's attention as src/layers/attention.ts computes it, with Qwen2-0.5B's shapes, and causalMask's output. */
function attentionShapes(): string {
  const c = qwen2Config();
  const { hiddenSize: E, numHeads: H, numKvHeads: Hkv, headDim: D } = c;
  const [B, L, S] = [1, 4, 10];
  const G = H / Hkv;
  const svg = new Svg(820, 470);
  svg.text(
    16,
    22,
    `Attention in one layer (src/layers/attention.ts), with Qwen2-0.5B's shapes: E = ${E}, H = ${H}, H_kv = ${Hkv}, D = ${D}`,
  );
  svg.text(16, 40, `B = ${B} sequence, L = ${L} new tokens, S = ${S} keys (${S - L} in the cache); G = H / H_kv = ${G}`, {
    "font-size": 11,
  });
  const steps: [string, string, string][] = [
    ["x", shape("B, L, E", [B, L, E]), "the layer's input, after RMSNorm"],
    ["q = x·W_qᵀ + b_q, RoPE", shape("B, H, L, D", [B, H, L, D]), "k, v: x·W_kᵀ, x·W_vᵀ, appended to the cache"],
    ["q viewed by group", shape("B, H_kv, G, L, D", [B, Hkv, G, L, D]), `k, v: ${shape("B, H_kv, S, D", [B, Hkv, S, D])}`],
    ["scores = q·kᵀ / √D + mask", shape("B, H_kv, G, L, S", [B, Hkv, G, L, S]), "k broadcast over G: never copied"],
    ["P = softmax over S", shape("B, H_kv, G, L, S", [B, Hkv, G, L, S]), "each row sums to 1"],
    ["o = P·v", shape("B, H, L, D", [B, H, L, D]), "then transposed to [B, L, H·D]"],
    ["o·W_oᵀ", shape("B, L, E", [B, L, E]), "added to x (the residual)"],
  ];
  steps.forEach(([what, dims, note], i) => {
    const y = 58 + i * 56;
    svg.rect(16, y, 300, 40, { fill: i === 3 || i === 4 ? "#f3eefa" : "#eef4fa", stroke: "#888" });
    svg.text(26, y + 17, what, { "font-weight": "bold" });
    svg.text(26, y + 33, dims, { "font-family": "monospace", "font-size": 11 });
    svg.text(326, y + 25, note, { "font-size": 11, fill: "#444" });
    if (i > 0) svg.arrow(166, y - 16, 166, y - 1);
  });
  // The mask, as causalMask(L, S) builds it: query i sits at position S − L + i.
  const mask = causalMask(L, S);
  const cell = 17;
  const [mx, my] = [620, 300];
  svg.text(mx - 24, my - 54, `the mask, causalMask(${L}, ${S}):`, { "font-size": 11 });
  svg.text(mx - 24, my - 40, `query i sits at position ${S - L} + i and`, { "font-size": 11 });
  svg.text(mx - 24, my - 26, "sees keys 0 … S − L + i (grey: −∞)", { "font-size": 11 });
  for (let j = 0; j < S; j++) svg.text(mx + j * cell + cell / 2, my - 6, String(j), { "text-anchor": "middle", "font-size": 10 });
  for (let i = 0; i < L; i++) {
    svg.text(mx - 6, my + i * cell + 15, `q${i}`, { "text-anchor": "end", "font-size": 10 });
    for (let j = 0; j < S; j++) {
      const hidden = mask.get(i, j) === -Infinity;
      svg.rect(mx + j * cell, my + i * cell, cell, cell, { fill: hidden ? GREY : "white", stroke: "#888" });
    }
  }
  svg.text(mx + (S * cell) / 2, my + L * cell + 16, "key position", { "text-anchor": "middle", "font-size": 10 });
  return svg.toString();
}

/** Qwen2-0.5B's query heads in their groups, each group reading one K/V head, and what GQA saves in the KV cache. */
function gqaHeads(): string {
  const c = qwen2Config();
  const { numHeads: H, numKvHeads: Hkv, headDim: D, numLayers } = c;
  const G = H / Hkv;
  const svg = new Svg(780, 250);
  svg.text(16, 22, `Grouped-query attention in Qwen2-0.5B: H = ${H} query heads, H_kv = ${Hkv} key/value heads, G = H / H_kv = ${G}`);
  svg.text(16, 40, "query head h reads key/value head ⌊h / G⌋ (src/kernels/ts-kernels.ts, pagedAttention)", { "font-size": 11 });
  const w = 46;
  const qx = (h: number): number => 20 + h * (w + 6) + (h >= G ? 20 : 0);
  const kvx = (g: number): number => qx(g * G) + ((G - 1) * (w + 6)) / 2 - 20;
  for (let g = 0; g < Hkv; g++) {
    svg.rect(kvx(g), 160, w + 40, 36, { fill: g === 0 ? LIGHT_BLUE : LIGHT_ORANGE, stroke: "#555" });
    svg.text(kvx(g) + (w + 40) / 2, 183, `K/V head ${g}`, { "text-anchor": "middle" });
  }
  for (let h = 0; h < H; h++) {
    const g = Math.floor(h / G);
    svg.rect(qx(h), 70, w, 36, { fill: g === 0 ? BLUE : ORANGE, stroke: "#555" });
    svg.text(qx(h) + w / 2, 93, `q${h}`, { "text-anchor": "middle", fill: "white" });
    svg.line(qx(h) + w / 2, 106, kvx(g) + (w + 40) / 2, 160, { stroke: "#999" });
  }
  const gqa = PagedKvCache.bytesPerToken(c, "f16");
  const mha = PagedKvCache.bytesPerToken({ ...c, numKvHeads: H }, "f16");
  svg.text(
    16,
    224,
    `KV cache per token in f16 (PagedKvCache.bytesPerToken): 2 · ${numLayers} layers · ${Hkv} heads · ${D} · 2 bytes = ${gqa / 1024} KiB;`,
    {
      "font-size": 11,
    },
  );
  svg.text(16, 240, `with one K/V head per query head it would be ${mha / 1024} KiB, ${H / Hkv}× as much.`, { "font-size": 11 });
  return svg.toString();
}

/** A forward pass that keeps the batches the engine gives it: their block tables are what the kernels read. */
class RecordingForward extends BatchForward {
  readonly batches: Batch[] = [];

  override forward(batch: Batch, cache: PagedKvCache, onLogits: (index: number, logits: Float32Array) => void): void {
    this.batches.push(batch);
    super.forward(batch, cache, onLogits);
  }
}

/** A one-layer model with zero weights: which blocks hold which tokens does not depend on the weights. */
function zeroModel(): Transformer {
  const config = parseModelConfig({
    model_type: "llama",
    hidden_size: 8,
    intermediate_size: 8,
    num_hidden_layers: 1,
    num_attention_heads: 2,
    num_key_value_heads: 1,
    vocab_size: 32,
    max_position_embeddings: 64,
  });
  const { hiddenSize: E, intermediateSize: I, numHeads: H, numKvHeads: Hkv, headDim: D, vocabSize: V } = config;
  const zeros = (rows: number, cols: number): DenseWeight => new DenseWeight("f32", [rows, cols], new Float32Array(rows * cols));
  const linear = (rows: number, cols: number): Linear => new Linear(zeros(rows, cols));
  const norm = (): RMSNorm => new RMSNorm(Tensor.full([E], 1), config.rmsNormEps);
  const attention = new Attention(
    { qProj: linear(H * D, E), kProj: linear(Hkv * D, E), vProj: linear(Hkv * D, E), oProj: linear(E, H * D) },
    H,
    Hkv,
    D,
    new RoPE(D, config.ropeTheta),
  );
  const layer = new DecoderLayer(norm(), attention, norm(), new MLP(linear(I, E), linear(I, E), linear(E, I)));
  return new Transformer(config, new Embedding(zeros(V, E)), [layer], norm());
}

/**
 * Two requests with the same 10-token system prompt on the real engine, blocks of 4 tokens: A is
 * prefilled, then B arrives and finds A's first two blocks in the prefix cache. Drawn: the block
 * tables of the step where both run, as the kernels get them, and the pool's blocks.
 */
function pagedBlockTable(): string {
  const blockSize = 4;
  const blocks = 10;
  const system = Array.from({ length: 10 }, (_, i) => 1 + i);
  const prompts = { A: [...system, 11, 12, 13], B: [...system, 21, 22, 23, 24, 25] };
  const forward = new RecordingForward(zeroModel(), new TsKernels());
  const engine = new Engine(forward, { blocks, blockSize, kvDtype: "f32", maxNumSeqs: 4, maxBatchTokens: 64 });
  const sampling = { ...DEFAULT_SAMPLING, temperature: 0, seed: 0 };
  const add = (id: "A" | "B"): void => engine.add(id, { promptIds: prompts[id], maxTokens: 4, stopIds: [], sampling });
  add("A");
  engine.step();
  add("B");
  const { events, trace } = engine.step();
  const batch = forward.batches[forward.batches.length - 1];
  const cached = (events as RequestEvent[]).find((e) => e.id === "B")?.cachedTokens ?? 0;
  const seqs = (trace as StepTrace).requests.map(({ id }, i) => {
    const [, , kvLen, tableStart] = batch.seqs.subarray(i * SEQ_FIELDS, (i + 1) * SEQ_FIELDS);
    const table = Array.from(batch.blockTables.subarray(tableStart, tableStart + Math.ceil(kvLen / blockSize)));
    return { id, kvLen, table, promptLength: prompts[id as "A" | "B"].length };
  });

  const svg = new Svg(800, 440);
  svg.text(16, 22, `Paged KV: the block tables of one engine step (src/engine/engine.ts, layout), ${blockSize} tokens per block`);
  svg.text(
    16,
    40,
    `A and B share a ${system.length}-token system prompt; B arrived after A's prefill and found ${cached} tokens in the prefix cache`,
    {
      "font-size": 11,
    },
  );
  const slot = 16;
  const bw = blockSize * slot;
  const poolY = 180;
  const px = (b: number): number => 40 + b * (bw + 10);
  const colourOf = (b: number): string => {
    const holders = seqs.filter((s) => s.table.includes(b)).map((s) => s.id);
    return holders.length > 1 ? PURPLE : holders[0] === "A" ? BLUE : holders[0] === "B" ? ORANGE : "white";
  };
  // A above the pool, B below it, each logical block joined to the physical block its table names.
  seqs.forEach((s, row) => {
    const y = row === 0 ? 80 : 310;
    const label = `${s.id}: ${s.promptLength}-token prompt, ${s.kvLen} tokens in the cache after this step; block table [${s.table.join(", ")}]`;
    svg.text(16, row === 0 ? y - 10 : y + 52, label, { "font-size": 11 });
    s.table.forEach((b, i) => {
      const x = 40 + i * (bw + 24);
      for (let k = 0; k < blockSize; k++) {
        const p = i * blockSize + k;
        const fill = p >= s.kvLen ? "white" : p < system.length ? PURPLE : p < s.promptLength ? (s.id === "A" ? BLUE : ORANGE) : GREY;
        svg.rect(x + k * slot, y, slot, slot, { fill, stroke: "#555" });
      }
      svg.text(x + bw / 2, y + 30, `logical ${i}`, { "text-anchor": "middle", "font-size": 10 });
      const [from, to] = row === 0 ? [y + 36, poolY - 2] : [y - 2, poolY + 62];
      svg.line(x + bw / 2, from, px(b) + bw / 2, to, { stroke: colourOf(b), "stroke-width": 1.5 });
    });
  });
  for (let b = 0; b < blocks; b++) {
    const refs = engine.pool.refCount(b);
    svg.rect(px(b), poolY, bw, 28, { fill: colourOf(b), stroke: "#555", "fill-opacity": refs === 0 ? 1 : 0.35 });
    svg.text(px(b) + bw / 2, poolY + 18, `#${b}`, { "text-anchor": "middle", "font-weight": "bold" });
    svg.text(px(b) + bw / 2, poolY + 42, refs === 0 ? "free" : `refs ${refs}`, { "text-anchor": "middle", "font-size": 10 });
    if (engine.pool.isCached(b)) svg.text(px(b) + bw / 2, poolY + 54, "cached", { "text-anchor": "middle", "font-size": 10 });
  }
  svg.text(
    16,
    396,
    `the middle row is the pool: ${blocks} physical blocks (src/engine/block-pool.ts), with references and prefix-cache keys after the step`,
    {
      "font-size": 11,
    },
  );
  const legend: [string, string][] = [
    [PURPLE, "system prompt (shared blocks)"],
    [BLUE, "A's own tokens"],
    [ORANGE, "B's own tokens"],
    [GREY, "generated"],
  ];
  legend.forEach(([fill, label], i) => {
    svg.rect(40 + i * 180, 414, 12, 12, { fill, stroke: "#555" }).text(58 + i * 180, 424, label, { "font-size": 11 });
  });
  return svg.toString();
}

/** The recorded steps of a real server run: which requests ran in each step, and how many tokens each computed. */
function batchingTimeline(trace: StepTrace[]): string {
  const ids: string[] = [];
  for (const s of trace) for (const r of s.requests) if (!ids.includes(r.id)) ids.push(r.id);
  const cw = Math.max(4, Math.min(12, Math.floor(660 / trace.length)));
  const left = 290;
  const lane = 28;
  const barTop = 72;
  const barH = 60;
  const lanesTop = barTop + barH + 24;
  const W = left + trace.length * cw + 20;
  const H = lanesTop + ids.length * lane + 56;
  const maxTokens = Math.max(...trace.map((s) => s.requests.reduce((n, r) => n + r.tokens, 0)));
  const svg = new Svg(W, H);
  svg.text(16, 22, `Continuous batching: the ${trace.length} engine steps of a real \`tiny-llm serve --trace-steps\` run, ${TRACE_MODEL}`);
  svg.text(16, 40, `with ${TRACE_SERVER_ARGS.join(" ")}; five streaming requests, each sent while the others run`, { "font-size": 11 });
  svg.text(16, 56, "dark: prompt tokens (a prefill chunk, with its size); light: one decode token; requests join and leave between steps", {
    "font-size": 11,
  });
  svg.text(left - 8, barTop + barH / 2 + 4, `tokens per step (max ${maxTokens})`, { "text-anchor": "end", "font-size": 11 });
  trace.forEach((s, i) => {
    const x = left + i * cw;
    let y = barTop + barH;
    for (const r of s.requests) {
      const h = (r.tokens / maxTokens) * barH;
      y -= h;
      svg.rect(x, y, cw - 1, h, { fill: r.kind === "prefill" ? BLUE : LIGHT_BLUE });
    }
    for (const r of s.requests) {
      const ly = lanesTop + ids.indexOf(r.id) * lane;
      svg.rect(x, ly, cw - 1, lane - 6, { fill: r.kind === "prefill" ? BLUE : LIGHT_BLUE });
      if (r.kind === "prefill" && cw >= 10) {
        svg.text(x + (cw - 1) / 2, ly + 15, String(r.tokens), { "text-anchor": "middle", "font-size": 8, fill: "white" });
      }
    }
    if (i % 10 === 0) svg.text(x, lanesTop + ids.length * lane + 14, String(s.step), { "font-size": 10 });
  });
  ids.forEach((id, k) => {
    const mine = trace.flatMap((s) => s.requests.filter((r) => r.id === id));
    const prompt = mine.filter((r) => r.kind === "prefill");
    const chunks = prompt.length === 1 ? "1 chunk" : `${prompt.length} chunks`;
    const label = `R${k + 1}: ${prompt.reduce((n, r) => n + r.tokens, 0)}-token prompt in ${chunks}, ${mine.length - prompt.length} decode steps`;
    svg.text(left - 8, lanesTop + k * lane + 15, label, { "text-anchor": "end", "font-size": 11 });
  });
  svg.text(left, lanesTop + ids.length * lane + 30, "engine step", { "font-size": 11 });
  const ms = trace.map((s) => s.ms).sort((a, b) => a - b);
  svg.text(
    left,
    lanesTop + ids.length * lane + 46,
    `step time: median ${ms[Math.floor(ms.length / 2)].toFixed(0)} ms, longest ${ms[ms.length - 1].toFixed(0)} ms`,
    {
      "font-size": 11,
    },
  );
  return svg.toString();
}

function readTrace(path: string): StepTrace[] {
  return readFileSync(path, "utf8")
    .split("\n")
    .filter((line) => line.trim() !== "")
    .map((line) => JSON.parse(line) as StepTrace);
}

/** Every picture, by its path relative to the project root. */
export function guidePictures(): Map<string, string> {
  const pictures = new Map<string, string>([
    ["docs/guide/img/attention-shapes.svg", attentionShapes()],
    ["docs/guide/img/gqa-heads.svg", gqaHeads()],
    ["docs/guide/img/paged-block-table.svg", pagedBlockTable()],
    ["docs/guide/img/batching-timeline.svg", batchingTimeline(readTrace(join(root, TRACE_FILE)))],
  ]);
  for (const plot of PLOTS) pictures.set(plot.svg, plot.draw(readData(join(root, plot.data))));
  return pictures;
}

function main(argv: string[]): void {
  const { values } = parseArgs({ args: argv, options: { out: { type: "string" } } });
  const out = resolve(values.out ?? root);
  for (const [path, svg] of guidePictures()) {
    mkdirSync(dirname(join(out, path)), { recursive: true });
    writeFileSync(join(out, path), svg);
    process.stdout.write(`${join(out, path)}\n`);
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  try {
    main(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`draw-guide-diagrams: ${(err as Error).message}\n`);
    process.exitCode = 1;
  }
}
