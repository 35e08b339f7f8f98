/**
 * `tiny-llm info`: what a model is, from its headers and config (no weights are read):
 * architecture, parameters, weight types, shapes, context, vocabulary, chat template, and the
 * memory it needs at a context length.
 */
import { DEFAULT_MODEL } from "../hub/model-spec.js";
import { readModelInfo } from "../loaders/model-info.js";
import { PagedKvCache } from "../engine/kv-cache.js";
import { formatBytes, writeOut } from "./output.js";
import { HUB_OPTIONS, MODEL_OPTION, localModel, modelHelp, parseKvDtype, parseOptions, parseWholeNumber } from "./options.js";

export const INFO_HELP = `Usage: tiny-llm info [-m MODEL] [options]

Describes a model without loading its weights: architecture, parameters (counted from the tensor
shapes), weight types, layers and heads, context length, vocabulary, whether it has a chat
template, and the memory it needs: its weights plus the KV cache at --ctx tokens.

Options:
${modelHelp(DEFAULT_MODEL)}
  --ctx N             context length for the memory estimate (default: the model's)
  --kv-dtype T        f16 (default, as the native kernels store K/V), bf16 or f32
  --json              one JSON object instead of the table
  -h, --help          show this help`;

const OPTIONS = {
  ...MODEL_OPTION,
  ...HUB_OPTIONS,
  ctx: { type: "string" },
  "kv-dtype": { type: "string" },
  json: { type: "boolean", default: false },
} as const;

const millions = (n: number): string => (n >= 1e9 ? `${(n / 1e9).toFixed(2)} B` : `${(n / 1e6).toFixed(2)} M`);

export async function runInfo(argv: string[]): Promise<void> {
  const values = parseOptions("info", argv, OPTIONS, INFO_HELP);
  if (!values) return;
  const kvDtype = parseKvDtype(values["kv-dtype"]) ?? "f16";
  const ctxGiven = parseWholeNumber("ctx", values.ctx, 1);
  const path = await localModel(values);
  const info = readModelInfo(path);
  const c = info.config;
  const ctx = ctxGiven ?? c.maxPositionEmbeddings;
  const kvBytes = PagedKvCache.bytesPerToken(c, kvDtype) * ctx;
  // What loading takes: the weights as stored, and the K/V of `ctx` tokens.
  const memory = info.weightBytes + kvBytes;
  const model = values.model ?? DEFAULT_MODEL;
  if (values.json) {
    const out = {
      model,
      path,
      format: info.format,
      architecture: c.modelType,
      parameters: info.parameters,
      weightTypes: info.weightTypes,
      layers: c.numLayers,
      hiddenSize: c.hiddenSize,
      heads: c.numHeads,
      kvHeads: c.numKvHeads,
      headDim: c.headDim,
      contextLength: c.maxPositionEmbeddings,
      vocabSize: c.vocabSize,
      chatTemplate: info.chatTemplate,
      ctx,
      kvDtype,
      weightBytes: info.weightBytes,
      kvBytes,
      memoryBytes: memory,
    };
    writeOut(JSON.stringify(out) + "\n");
    return;
  }
  const types = Object.entries(info.weightTypes)
    .sort((a, b) => b[1] - a[1])
    .map(([type, n]) => `${type} ${((100 * n) / info.parameters).toFixed(1)} %`)
    .join(", ");
  const lines = [
    ["model", model === path ? path : `${model} (${path})`],
    ["format", info.format],
    ["architecture", c.modelType],
    ["parameters", millions(info.parameters)],
    ["weight types", types],
    ["layers", `${c.numLayers}, hidden size ${c.hiddenSize}, ${c.numHeads} heads (${c.numKvHeads} KV) of ${c.headDim}`],
    ["context", `${c.maxPositionEmbeddings} tokens`],
    ["vocabulary", `${c.vocabSize} tokens`],
    ["chat template", info.chatTemplate ? "yes" : "no"],
    [
      "memory",
      `${formatBytes(memory)} at ${ctx} tokens: weights ${formatBytes(info.weightBytes)} + ` +
        `KV cache ${formatBytes(kvBytes)} (${kvDtype})`,
    ],
  ];
  writeOut(lines.map(([key, value]) => `${key.padEnd(14)}${value}`).join("\n") + "\n");
}
