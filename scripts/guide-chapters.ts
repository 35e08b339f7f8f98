/**
 * The chapters of the guide (docs/guide/), in course order, and the tests that check each one:
 * the one list that `npm run test:chapter -- NAME` runs from and that test/guide-links.test.ts
 * holds the pages to.
 */

export interface ChapterTests {
  /** A file of test/, as it is named there (compiled to dist/test/ with a .js extension). */
  file: string;
  /** A --test-name-pattern: only the tests (or suites) of the file whose names match run. */
  grep?: string;
}

export interface Chapter {
  /** What `npm run test:chapter -- ID` takes. */
  id: string;
  week: 1 | 2 | 3;
  title: string;
  /** The page, in docs/guide/. */
  page: string;
  tests: ChapterTests[];
}

const t = (file: string, grep?: string): ChapterTests => (grep === undefined ? { file } : { file, grep });

export const CHAPTERS: readonly Chapter[] = [
  {
    id: "tensors",
    week: 1,
    title: "Tensors and the dimension vocabulary",
    page: "week1-01-tensors.md",
    tests: [t("tensor.test.ts"), t("ops.test.ts"), t("dtype.test.ts")],
  },
  {
    id: "attention",
    week: 1,
    title: "Attention: scaled dot product and masks",
    page: "week1-02-attention.md",
    tests: [t("attention.test.ts", "one key|by hand|causal mask|additive mask|shape errors")],
  },
  {
    id: "gqa",
    week: 1,
    title: "Multi-head and grouped-query attention",
    page: "week1-03-gqa.md",
    tests: [t("attention.test.ts", "GQA|multi-head")],
  },
  {
    id: "rope",
    week: 1,
    title: "RoPE, in both layouts",
    page: "week1-04-rope.md",
    tests: [t("layers.test.ts", "RoPE"), t("native-kernels.test.ts", "rope")],
  },
  {
    id: "rmsnorm-mlp",
    week: 1,
    title: "RMSNorm and the SwiGLU MLP",
    page: "week1-05-rmsnorm-mlp.md",
    tests: [t("layers.test.ts", "RMSNorm|SwiGLU"), t("native-kernels.test.ts", "rmsNorm|swiglu")],
  },
  {
    id: "model",
    week: 1,
    title: "The Qwen2 block and model (Qwen3 and Llama)",
    page: "week1-06-qwen2-model.md",
    tests: [t("layers.test.ts", "Linear|bf16 weight|Embedding"), t("model.test.ts"), t("golden-generation.test.ts")],
  },
  {
    id: "loading",
    week: 1,
    title: "Loading safetensors and GGUF",
    page: "week1-07-loading.md",
    tests: [t("safetensors.test.ts"), t("checkpoint.test.ts"), t("gguf.test.ts"), t("gguf-model.test.ts")],
  },
  {
    id: "tokenizer",
    week: 1,
    title: "The tokenizer and the chat template",
    page: "week1-08-tokenizer.md",
    tests: [
      t("tokenizer.test.ts"),
      t("byte-level-bpe.test.ts"),
      t("tokenizer-json.test.ts"),
      t("chat-template.test.ts"),
      t("stream-decoder.test.ts"),
    ],
  },
  {
    id: "generation",
    week: 1,
    title: "Generating: greedy and sampling",
    page: "week1-09-generation.md",
    tests: [
      t("sampler.test.ts"),
      t("stop-strings.test.ts"),
      t("model.test.ts", "stops at the context|sampling from the CLI"),
      t("server-request-params.test.ts", "generation config|vLLM's extras|seed"),
    ],
  },
  {
    id: "kv-cache",
    week: 2,
    title: "The KV cache",
    page: "week2-01-kv-cache.md",
    tests: [t("layers.test.ts", "KVCache"), t("model.test.ts", "KV cache")],
  },
  {
    id: "quantization",
    week: 2,
    title: "Quantized formats and matmul",
    page: "week2-02-quantization.md",
    tests: [
      t("block-quant.test.ts"),
      t("k-quant.test.ts"),
      t("legacy-quant.test.ts"),
      t("affine-quant.test.ts"),
      t("native-quantized.test.ts"),
      t("native-kernels.test.ts", "activation-quantization bound"),
      t("quantize-command.test.ts"),
    ],
  },
  {
    id: "native-kernels",
    week: 2,
    title: "Native kernels, each checked against the TypeScript one",
    page: "week2-03-native-kernels.md",
    tests: [t("native-kernels.test.ts"), t("native-context.test.ts"), t("engine-forward.test.ts")],
  },
  {
    id: "flash-attention",
    week: 2,
    title: "Flash attention",
    page: "week2-04-flash-attention.md",
    tests: [t("paged-attention.test.ts", "scaledDotProductAttention|in chunks"), t("engine-forward.test.ts", "tiles of 64 keys")],
  },
  {
    id: "memory",
    week: 2,
    title: "Memory: mapping, and what RSS is made of",
    page: "week2-05-memory.md",
    tests: [
      t("peak-rss.test.ts"),
      t("native-kernels.test.ts", "releaseScratch"),
      t("engine-forward.test.ts", "buffers given back|rows per pass"),
      t("engine.test.ts", "KV pool sizing"),
    ],
  },
  {
    id: "continuous-batching",
    week: 3,
    title: "Continuous batching",
    page: "week3-01-continuous-batching.md",
    tests: [
      t("engine.test.ts", "alone and among|stop tokens|cancelled mid-prefill"),
      t("async-engine.test.ts"),
      t("server-load.test.ts", "64 concurrent clients"),
    ],
  },
  {
    id: "chunked-prefill",
    week: 3,
    title: "Chunked prefill",
    page: "week3-02-chunked-prefill.md",
    tests: [
      t("engine.test.ts", "in chunks of 7"),
      t("engine-forward.test.ts", "longer than two passes"),
      t("paged-attention.test.ts", "in chunks"),
      t("server-load.test.ts", "4000-token prompt"),
    ],
  },
  {
    id: "paged-attention",
    week: 3,
    title: "Paged KV and paged attention",
    page: "week3-03-paged-attention.md",
    tests: [t("paged-attention.test.ts"), t("engine.test.ts", "block pool|fills the pool exactly|context's last position")],
  },
  {
    id: "prefix-caching",
    week: 3,
    title: "Prefix caching",
    page: "week3-04-prefix-caching.md",
    tests: [t("engine.test.ts", "prefix cache|n choices|block pool")],
  },
  {
    id: "preemption",
    week: 3,
    title: "Preemption",
    page: "week3-05-preemption.md",
    tests: [t("engine.test.ts", "preempted")],
  },
  {
    id: "batch-invariance",
    week: 3,
    title: "Batch invariance",
    page: "week3-06-batch-invariance.md",
    tests: [
      t("native-batch-invariance.test.ts"),
      t("paged-attention.test.ts", "batch-invariant"),
      t("engine-forward.test.ts", "mixed batch"),
      t("engine.test.ts", "alone and among"),
    ],
  },
  {
    id: "server",
    week: 3,
    title: "The OpenAI server: SSE, cancellation, metrics",
    page: "week3-07-openai-server.md",
    tests: [
      t("server-openai.test.ts"),
      t("server-errors.test.ts"),
      t("server-request-params.test.ts"),
      t("server-load.test.ts", "disconnect"),
    ],
  },
  {
    id: "deployment",
    week: 3,
    title: "Deployment",
    page: "week3-08-deployment.md",
    tests: [t("server-cli.test.ts"), t("server-errors.test.ts", "while the model loads|API key|shutdown")],
  },
];

export function chapterIds(): string[] {
  return CHAPTERS.map((c) => c.id);
}
