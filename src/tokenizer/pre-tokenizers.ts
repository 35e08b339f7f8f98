/**
 * The pre-tokenizers of the byte-level BPE tokenizers this engine runs (Qwen2, Llama 3, SmolLM):
 * the regex that splits text into words, and what goes with it. GGUF names them in
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

/**
 * SmolLM's pre-tokenizer (llama.cpp's "smollm", as its "starcoder" and "refact"): two splits in
 * turn, as Hugging Face's Sequence of Digits(individual_digits) and ByteLevel(use_regex) does.
 * First every number character is a word of its own (`\p{N}`), then GPT-2's regex
 * `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+` splits each
 * stretch between them, seeing nothing past the stretch. That is this one regex: GPT-2's with the
 * digit first and ` ?\p{N}+` gone (no stretch has a digit), and a run of spaces before a digit
 * taken whole, since within its stretch nothing follows it (`(?!\S)` becomes `(?![^\s\p{N}])`).
 * No other part of GPT-2's regex can reach past a digit. Tests hold it to the two splits.
 */
const SMOLLM_PRE: PreTokenizer = {
  regex: String.raw`\p{N}|'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?[^\s\p{L}\p{N}]+|\s+(?![^\s\p{N}])|\s+`,
  nfc: false,
  ignoreMerges: false,
  addBos: false,
};

/** tokenizer.ggml.pre values (as llama.cpp's converter writes them) and their pre-tokenizers. */
export const PRE_TOKENIZERS: Readonly<Record<string, PreTokenizer>> = {
  qwen2: QWEN2_PRE,
  "deepseek-r1-qwen": QWEN2_PRE,
  "llama-bpe": LLAMA3_PRE,
  llama3: LLAMA3_PRE,
  "llama-v3": LLAMA3_PRE,
  smollm: SMOLLM_PRE,
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

/**
 * The tokenizer.ggml.pre name of a byte-level pre-tokenizer, found by its split regex and
 * normalizer, or for SmolLM's by its two steps: Digits of single digits, then ByteLevel with
 * GPT-2's regex (`use_regex`).
 */
export function byteLevelPreTokenizerName(json: Record<string, unknown>): string | undefined {
  type Step =
    | {
        type?: unknown;
        pattern?: { Regex?: unknown };
        pretokenizers?: unknown;
        individual_digits?: unknown;
        use_regex?: unknown;
        add_prefix_space?: unknown;
      }
    | null
    | undefined;
  const pre = json.pre_tokenizer as Step;
  const steps = (pre?.type === "Sequence" && Array.isArray(pre.pretokenizers) ? pre.pretokenizers : [pre]) as Step[];
  if (!steps.some((step) => step?.type === "ByteLevel")) return undefined;
  const nfc = (json.normalizer as Step)?.type === "NFC";
  const [first, second] = steps;
  if (
    steps.length === 2 &&
    first?.type === "Digits" &&
    first.individual_digits === true &&
    second?.type === "ByteLevel" &&
    second.use_regex === true &&
    second.add_prefix_space === false &&
    !nfc
  ) {
    return "smollm";
  }
  const regex = steps.find((step) => step?.type === "Split")?.pattern?.Regex;
  // The first name of each pre-tokenizer is the one llama.cpp's converter writes.
  return Object.keys(PRE_TOKENIZERS).find((name) => PRE_TOKENIZERS[name].regex === regex && PRE_TOKENIZERS[name].nfc === nfc);
}
