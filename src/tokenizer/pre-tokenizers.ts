/**
 * The pre-tokenizers of the byte-level BPE tokenizers this engine runs (Qwen2, Llama 3): the
 * regex that splits text into words, and what goes with it. GGUF names them in
 * `tokenizer.ggml.pre`; a tokenizer.json is recognised by its split regex and normalizer.
 */
export interface PreTokenizer {
  regex: string;
  /** Unicode NFC before splitting. */
  nfc: boolean;
  /** A word that is a whole token is taken as is, without applying merges. */
  ignoreMerges: boolean;
  /** Whether BOS is added when the file does not say. */
  addBos: boolean;
}

const QWEN2_PRE: PreTokenizer = {
  regex: String.raw`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`,
  nfc: true,
  ignoreMerges: false,
  addBos: false,
};
const LLAMA3_PRE: PreTokenizer = {
  regex: String.raw`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`,
  nfc: false,
  ignoreMerges: true,
  addBos: true,
};

/** tokenizer.ggml.pre values (as llama.cpp's converter writes them) and their pre-tokenizers. */
export const PRE_TOKENIZERS: Readonly<Record<string, PreTokenizer>> = {
  qwen2: QWEN2_PRE,
  "deepseek-r1-qwen": QWEN2_PRE,
  "llama-bpe": LLAMA3_PRE,
  llama3: LLAMA3_PRE,
  "llama-v3": LLAMA3_PRE,
};

/**
 * A pre-tokenizer regex (Oniguruma syntax, as tokenizer.json stores it) as a JavaScript RegExp,
 * for the syntax these patterns use: `(?i:…)` of ASCII letters becomes character pairs, and
 * `\s`/`\S` become Unicode White_Space, which JavaScript's `\s` is not quite.
 */
export function jsRegExp(pattern: string): RegExp {
  const source = pattern
    .replace(/\(\?i:([^()]*)\)/g, (_, body: string) => `(?:${body.replace(/[a-z]/gi, (c) => `[${c.toLowerCase()}${c.toUpperCase()}]`)})`)
    .replaceAll(String.raw`\s`, String.raw`\p{White_Space}`)
    .replaceAll(String.raw`\S`, String.raw`\P{White_Space}`);
  return new RegExp(source, "gu");
}

/** The tokenizer.ggml.pre name of a byte-level pre-tokenizer, found by its split regex and normalizer. */
export function byteLevelPreTokenizerName(json: Record<string, unknown>): string | undefined {
  type Step = { type?: unknown; pattern?: { Regex?: unknown }; pretokenizers?: unknown } | null | undefined;
  const pre = json.pre_tokenizer as Step;
  const steps = (pre?.type === "Sequence" && Array.isArray(pre.pretokenizers) ? pre.pretokenizers : [pre]) as Step[];
  if (!steps.some((step) => step?.type === "ByteLevel")) return undefined;
  const regex = steps.find((step) => step?.type === "Split")?.pattern?.Regex;
  const nfc = (json.normalizer as Step)?.type === "NFC";
  // The first name of each pre-tokenizer is the one llama.cpp's converter writes.
  return Object.keys(PRE_TOKENIZERS).find((name) => PRE_TOKENIZERS[name].regex === regex && PRE_TOKENIZERS[name].nfc === nfc);
}
