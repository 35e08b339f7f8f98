/**
 * Byte-level BPE (GPT-2, Qwen, Llama 3) over compact tables, for the tokenizers stored in GGUF
 * metadata and plain byte-level tokenizer.json files. A large vocabulary with its merges takes a
 * few percent of what @huggingface/tokenizers' objects and maps take (docs/benchmarks.md): a
 * fixed cost that would otherwise exceed a small quantized model's memory headroom. Tests hold
 * its ids and text equal to that library's.
 *
 * Encoding: the text is cut at added tokens (the longest one that matches, left to right); each
 * stretch between them is NFC-normalized when the pre-tokenizer asks, split into words by the
 * pre-tokenizer's regex, and each word's UTF-8 bytes are merged pair by pair, always the pair of
 * lowest merge rank (the leftmost on ties), until no adjacent pair has a rank.
 */
import { hashTableSize, StringIndex, StringTable, StringTableBuilder } from "../loaders/string-table.js";
import { byteLevelPreTokenizerName, jsRegExp, PRE_TOKENIZERS } from "./pre-tokenizers.js";
import { bpeTablesOf, MAX_TOKEN_ID, type BpeTables } from "./tokenizer-json.js";
import type { TokenizerConfig, TokenizerModel } from "./tokenizer.js";

/** What each id of the vocabulary is. */
export const TOKEN_KIND = {
  /** Produced by BPE. */
  NORMAL: 0,
  /** Matched whole in the text (e.g. "<think>"). */
  ADDED: 1,
  /** An added token that decoding can skip (e.g. "<|im_end|>"). */
  SPECIAL: 2,
  /** A padding slot of the embedding: no token. */
  UNUSED: 3,
} as const;

export interface ByteLevelBpeTables {
  /** Token texts as the vocabulary spells them: every byte as one printable character ("Ġthe"). */
  tokens: StringTable;
  /** A TOKEN_KIND per token. */
  kinds: Uint8Array;
  /** "left right", highest priority first. */
  merges: StringTable;
  /** Splits text into words (global, Unicode flags). */
  split: RegExp;
  /** Unicode NFC before splitting. */
  nfc: boolean;
  /** A word that is a whole token is taken as is, without applying merges. */
  ignoreMerges: boolean;
}

interface TokenizerJson {
  normalizer?: { type?: unknown } | null;
  pre_tokenizer?: { type?: unknown; pretokenizers?: unknown } | null;
  post_processor?: { type?: unknown } | null;
  decoder?: { type?: unknown } | null;
  added_tokens?: {
    id: number;
    content: string;
    special?: boolean;
    lstrip?: boolean;
    rstrip?: boolean;
    single_word?: boolean;
    normalized?: boolean;
  }[];
  model?: {
    type?: unknown;
    vocab?: Record<string, number>;
    merges?: (string | string[])[];
    byte_fallback?: unknown;
    unk_token?: unknown;
    dropout?: unknown;
    continuing_subword_prefix?: unknown;
    end_of_word_suffix?: unknown;
    ignore_merges?: unknown;
  };
}

/**
 * The tables of a tokenizer.json that is plain byte-level BPE with a pre-tokenizer of
 * pre-tokenizers.ts (Qwen's, Llama 3's), or undefined for anything else, which
 * @huggingface/tokenizers runs instead.
 */
export function byteLevelBpeTables(tokenizerJson: object, config: TokenizerConfig, bpe?: BpeTables): ByteLevelBpeTables | undefined {
  const json = tokenizerJson as TokenizerJson;
  const { model } = json;
  const steps =
    json.pre_tokenizer?.type === "Sequence" && Array.isArray(json.pre_tokenizer.pretokenizers)
      ? (json.pre_tokenizer.pretokenizers as unknown[])
      : [];
  const byteLevel = steps.find((step) => (step as { type?: unknown }).type === "ByteLevel") as
    { add_prefix_space?: unknown; use_regex?: unknown } | undefined;
  const split = steps.find((step) => (step as { type?: unknown }).type === "Split") as { behavior?: unknown; invert?: unknown } | undefined;
  const preName = byteLevelPreTokenizerName(json as Record<string, unknown>);
  const plain =
    model?.type === "BPE" &&
    !model.byte_fallback &&
    model.unk_token == null &&
    model.dropout == null &&
    !model.continuing_subword_prefix &&
    !model.end_of_word_suffix &&
    preName !== undefined &&
    steps.length === 2 &&
    split?.behavior === "Isolated" &&
    split.invert === false &&
    byteLevel?.add_prefix_space === false &&
    byteLevel.use_regex === false &&
    (json.normalizer == null || json.normalizer.type === "NFC") &&
    (json.post_processor == null || json.post_processor.type === "ByteLevel") &&
    json.decoder?.type === "ByteLevel" &&
    config.clean_up_tokenization_spaces !== true &&
    (json.added_tokens ?? []).every(
      (t) =>
        Number.isInteger(t.id) &&
        t.id >= 0 &&
        t.id < MAX_TOKEN_ID &&
        typeof t.content === "string" &&
        !t.lstrip &&
        !t.rstrip &&
        !t.single_word &&
        (!t.normalized || /^[\x20-\x7e]*$/.test(t.content)),
    );
  if (!plain) return undefined;
  // Only now, for a tokenizer that is plain: the library takes the parsed JSON as it is.
  bpe ??= bpeTablesOf(model);
  if (bpe === undefined) return undefined;

  // Token texts by id: the vocabulary's, then the added tokens' over them; ids of neither are unused.
  const { vocab } = bpe;
  const added = json.added_tokens ?? [];
  let size = 0;
  for (const id of vocab.ids) size = Math.max(size, id + 1);
  for (const t of added) size = Math.max(size, t.id + 1);
  const entryOf = new Int32Array(size).fill(NONE);
  vocab.ids.forEach((id, entry) => (entryOf[id] = entry));
  const kinds = new Uint8Array(size).fill(TOKEN_KIND.UNUSED);
  for (const id of vocab.ids) kinds[id] = TOKEN_KIND.NORMAL;
  const addedText = new Map<number, string>();
  const extraSpecial = new Set(Array.isArray(config.additional_special_tokens) ? config.additional_special_tokens : []);
  for (const t of added) {
    addedText.set(t.id, t.content);
    kinds[t.id] = t.special || extraSpecial.has(t.content) ? TOKEN_KIND.SPECIAL : TOKEN_KIND.ADDED;
  }
  const tokens = new StringTableBuilder(size);
  for (let id = 0; id < size; id++) {
    const text = addedText.get(id);
    if (text !== undefined) tokens.add(utf8.encode(text));
    else if (entryOf[id] !== NONE) tokens.add(vocab.texts.data, vocab.texts.start(entryOf[id]), vocab.texts.ends[entryOf[id]]);
    else tokens.add(vocab.texts.data, 0, 0);
  }
  const pre = PRE_TOKENIZERS[preName];
  return {
    tokens: tokens.finish(),
    kinds,
    merges: bpe.merges,
    split: jsRegExp(pre.regex),
    nfc: pre.nfc,
    ignoreMerges: model.ignore_merges === true,
  };
}

/**
 * GPT-2's byte alphabet: each byte as a printable character, so that a token's text never holds
 * whitespace or control characters. Printable Latin-1 bytes stand for themselves; the other 68
 * take the code points from 256 on, in byte order.
 */
const BYTE_CHARS: readonly number[] = (() => {
  const printable = (b: number): boolean => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
  let next = 256;
  return Array.from({ length: 256 }, (_, b) => (printable(b) ? b : next++));
})();
/** The byte each character of the alphabet stands for, by code point; -1 for other characters. */
const CHAR_BYTES = (() => {
  const bytes = new Int16Array(Math.max(...BYTE_CHARS) + 1).fill(-1);
  BYTE_CHARS.forEach((c, b) => (bytes[c] = b));
  return bytes;
})();

const NONE = -1;
const utf8 = new TextEncoder();
const WORD_CACHE_LIMIT = 10_000;

export class ByteLevelBpe implements TokenizerModel {
  readonly specialIds: ReadonlySet<number>;
  readonly vocabSize: number;
  private readonly tokens: StringTable;
  private readonly kinds: Uint8Array;
  /**
   * Token ids by their text, for words taken whole (ignoreMerges) and kept only then: building
   * the merges needs it once, and the few names tokenToId is asked for are found by a scan.
   */
  private readonly wholeWords?: StringIndex;
  /** The token of each single byte, or NONE. */
  private readonly byteIds = new Int32Array(256).fill(NONE);
  private readonly merges: MergeTable;
  /** Added tokens by their first UTF-16 unit, longest first. */
  private readonly addedByFirstUnit = new Map<string, { content: string; id: number }[]>();
  private readonly split: RegExp;
  private readonly nfc: boolean;
  private readonly ignoreMerges: boolean;
  private readonly wordCache = new Map<string, number[]>();
  private readonly decoder = new TextDecoder("utf-8", { ignoreBOM: true });

  /** Throws an Error saying what is wrong when a merge names tokens the vocabulary lacks. */
  constructor(tables: ByteLevelBpeTables) {
    const { tokens, kinds } = tables;
    if (kinds.length !== tokens.length) throw new Error(`${kinds.length} token kinds for ${tokens.length} tokens`);
    this.tokens = tokens;
    this.kinds = kinds;
    this.split = tables.split;
    this.nfc = tables.nfc;
    this.ignoreMerges = tables.ignoreMerges;

    const special = new Set<number>();
    let vocabSize = 0;
    for (let id = 0; id < tokens.length; id++) {
      const kind = kinds[id];
      if (kind === TOKEN_KIND.UNUSED) continue;
      vocabSize = id + 1;
      if (kind === TOKEN_KIND.NORMAL) continue;
      if (kind === TOKEN_KIND.SPECIAL) special.add(id);
      const content = tokens.at(id);
      if (content.length > 0) {
        const list = this.addedByFirstUnit.get(content[0]) ?? [];
        list.push({ content, id });
        this.addedByFirstUnit.set(content[0], list);
      }
    }
    for (const list of this.addedByFirstUnit.values()) list.sort((a, b) => b.content.length - a.content.length);
    this.specialIds = special;
    this.vocabSize = vocabSize;

    const ids = new StringIndex(tokens, (id) => kinds[id] !== TOKEN_KIND.UNUSED);
    for (let b = 0; b < 256; b++) this.byteIds[b] = ids.find(utf8.encode(String.fromCodePoint(BYTE_CHARS[b])));
    this.merges = new MergeTable(tables.merges, ids, tokens);
    if (this.ignoreMerges) this.wholeWords = ids;
  }

  encode(text: string): number[] {
    const ids: number[] = [];
    let start = 0;
    for (let i = 0; i < text.length;) {
      const added = this.addedTokenAt(text, i);
      if (added === undefined) {
        i++;
        continue;
      }
      this.encodeStretch(text.slice(start, i), ids);
      ids.push(added.id);
      i += added.content.length;
      start = i;
    }
    this.encodeStretch(text.slice(start), ids);
    return ids;
  }

  /** The bytes each normal token's characters stand for, and an added token's own text. */
  decode(ids: readonly number[], skipSpecialTokens: boolean): string {
    const kept = ids.filter((id) => this.hasToken(id) && !(skipSpecialTokens && this.specialIds.has(id)));
    // A token's bytes are never more than its UTF-8 text.
    let length = 0;
    for (const id of kept) length += this.tokens.ends[id] - this.tokens.start(id);
    const joined = new Uint8Array(length);
    let at = 0;
    for (const id of kept) {
      if (this.kinds[id] === TOKEN_KIND.NORMAL) at += byteLevelDecode(this.tokens, id, joined, at);
      else {
        joined.set(this.tokens.bytes(id), at);
        at += this.tokens.ends[id] - this.tokens.start(id);
      }
    }
    return this.decoder.decode(joined.subarray(0, at));
  }

  idToToken(id: number): string | undefined {
    return this.hasToken(id) ? this.tokens.at(id) : undefined;
  }

  /** The id of a token's text; the later id where two share it, as in a JSON vocabulary read into a map. */
  tokenToId(token: string): number | undefined {
    const bytes = utf8.encode(token);
    const { data, ends } = this.tokens;
    for (let id = this.tokens.length - 1; id >= 0; id--) {
      const start = this.tokens.start(id);
      if (ends[id] - start !== bytes.length || this.kinds[id] === TOKEN_KIND.UNUSED) continue;
      let k = 0;
      while (k < bytes.length && data[start + k] === bytes[k]) k++;
      if (k === bytes.length) return id;
    }
    return undefined;
  }

  private hasToken(id: number): boolean {
    return Number.isInteger(id) && id >= 0 && id < this.tokens.length && this.kinds[id] !== TOKEN_KIND.UNUSED;
  }

  private addedTokenAt(text: string, i: number): { content: string; id: number } | undefined {
    return this.addedByFirstUnit.get(text[i])?.find((t) => text.startsWith(t.content, i));
  }

  private encodeStretch(stretch: string, ids: number[]): void {
    if (stretch.length === 0) return;
    const text = this.nfc ? stretch.normalize("NFC") : stretch;
    // The regex's matches are words, and so is any text between them.
    let end = 0;
    for (const match of text.matchAll(this.split)) {
      const at = match.index ?? 0;
      if (at > end) this.encodeWord(text.slice(end, at), ids);
      if (match[0].length > 0) this.encodeWord(match[0], ids);
      end = at + match[0].length;
    }
    if (end < text.length) this.encodeWord(text.slice(end), ids);
  }

  private encodeWord(word: string, ids: number[]): void {
    let wordIds = this.wordCache.get(word);
    if (wordIds === undefined) {
      const bytes = utf8.encode(word);
      const whole = this.wholeWords ? this.wholeWords.find(byteLevelSpelling(bytes)) : NONE;
      wordIds = whole !== NONE ? [whole] : this.bpe(bytes);
      if (this.wordCache.size >= WORD_CACHE_LIMIT) this.wordCache.clear();
      this.wordCache.set(word, wordIds);
    }
    for (const id of wordIds) ids.push(id);
  }

  /**
   * Merges a word's bytes. The symbols form a linked list over byte positions, a merged symbol
   * living at its leftmost position; candidate pairs wait in a heap ordered by (rank, position),
   * and a popped pair is skipped when its symbols have changed since it was pushed.
   */
  private bpe(bytes: Uint8Array): number[] {
    const n = bytes.length;
    const symbol = new Int32Array(n);
    const next = new Int32Array(n);
    const prev = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      symbol[i] = this.byteIds[bytes[i]];
      next[i] = i + 1;
      prev[i] = i - 1;
    }
    const heap = new MinHeap();
    const consider = (left: number): void => {
      if (left < 0 || next[left] >= n) return;
      const rank = this.merges.rank(symbol[left], symbol[next[left]]);
      if (rank !== NONE) heap.push(rank * n + left);
    };
    for (let i = 0; i + 1 < n; i++) consider(i);
    while (heap.size > 0) {
      const key = heap.pop();
      const left = key % n;
      const rank = (key - left) / n;
      const right = next[left];
      // Pairs have one rank each, so an unchanged rank means the same two symbols are still there.
      if (symbol[left] === NONE || right >= n || this.merges.rank(symbol[left], symbol[right]) !== rank) continue;
      symbol[left] = this.merges.merged(rank);
      symbol[right] = NONE;
      next[left] = next[right];
      if (next[left] < n) prev[next[left]] = left;
      consider(prev[left]);
      consider(left);
    }
    const ids: number[] = [];
    // Bytes without a token of their own are dropped, as Hugging Face's BPE does without an unknown token.
    for (let i = 0; i < n; i = next[i]) if (symbol[i] !== NONE) ids.push(symbol[i]);
    return ids;
  }
}

/**
 * Writes the bytes a byte-level token stands for into `out` from `at` on and returns their count,
 * reading the token's UTF-8 text without making a string; a character outside the alphabet
 * stands for its own UTF-8 bytes.
 */
function byteLevelDecode(tokens: StringTable, id: number, out: Uint8Array, at: number): number {
  const { data } = tokens;
  const end = tokens.ends[id];
  let o = at;
  for (let i = tokens.start(id); i < end;) {
    const lead = data[i];
    const units = lead < 0x80 ? 1 : lead < 0xe0 ? 2 : lead < 0xf0 ? 3 : 4;
    const code = units === 1 ? lead : units === 2 ? ((lead & 0x1f) << 6) | (data[i + 1] & 0x3f) : -1;
    const byte = code >= 0 && code < CHAR_BYTES.length ? CHAR_BYTES[code] : NONE;
    if (byte !== NONE) out[o++] = byte;
    else for (let u = 0; u < units; u++) out[o++] = data[i + u];
    i += units;
  }
  return o - at;
}

/** The UTF-8 bytes of a word's byte-level spelling, as token texts are stored. */
function byteLevelSpelling(bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(bytes.length * 2);
  let at = 0;
  for (const b of bytes) {
    const c = BYTE_CHARS[b];
    if (c < 0x80) out[at++] = c;
    else {
      out[at++] = 0xc0 | (c >> 6);
      out[at++] = 0x80 | (c & 0x3f);
    }
  }
  return out.subarray(0, at);
}

/**
 * Merge ranks by pair of token ids, and the token each merge makes. A slot holds a rank; the pair
 * it stands for is its left id and the rest of its merged token's text, which is the right
 * token's: ids here are the vocabulary index's (one per text), so equal texts mean equal ids.
 */
class MergeTable {
  /** Per slot: the rank of a merge, or NONE. */
  private readonly slots: Int32Array;
  private readonly mask: number;
  private readonly leftIds: Int32Array;
  private readonly mergedIds: Int32Array;

  constructor(
    merges: StringTable,
    ids: StringIndex,
    private readonly tokens: StringTable,
  ) {
    this.slots = new Int32Array(hashTableSize(merges.length)).fill(NONE);
    this.mask = this.slots.length - 1;
    this.leftIds = new Int32Array(merges.length);
    this.mergedIds = new Int32Array(merges.length);
    const { data } = merges;
    let joined = new Uint8Array(64);
    for (let rank = 0; rank < merges.length; rank++) {
      const start = merges.start(rank);
      const end = merges.ends[rank];
      // Byte-level tokens never hold a space (it is spelled "Ġ"), so the first one separates the pair.
      let space = start;
      while (space < end && data[space] !== 0x20) space++;
      let [left, right, merged] = [NONE, NONE, NONE];
      if (space > start && space < end) {
        left = ids.find(data, start, space);
        right = ids.find(data, space + 1, end);
        if (joined.length < end - start) joined = new Uint8Array(2 * (end - start));
        let length = 0;
        for (let i = start; i < end; i++) if (i !== space) joined[length++] = data[i];
        merged = ids.find(joined, 0, length);
      }
      if (left === NONE || right === NONE || merged === NONE) {
        throw new Error(`merge ${rank} ${JSON.stringify(merges.at(rank))} is not two tokens of the vocabulary that join into a third`);
      }
      // A repeated merge keeps its last rank, as Hugging Face's map of merges does.
      const slot = this.slotOf(left, right);
      this.leftIds[rank] = left;
      this.mergedIds[rank] = merged;
      this.slots[slot] = rank;
    }
  }

  rank(left: number, right: number): number {
    return left === NONE || right === NONE ? NONE : this.slots[this.slotOf(left, right)];
  }

  merged(rank: number): number {
    return this.mergedIds[rank];
  }

  private slotOf(left: number, right: number): number {
    const hash = Math.imul(left, 0x9e3779b1) ^ Math.imul(right + 0x7f4a7c15, 0x85ebca77);
    for (let slot = (hash ^ (hash >>> 15)) & this.mask; ; slot = (slot + 1) & this.mask) {
      const rank = this.slots[slot];
      if (rank === NONE || (this.leftIds[rank] === left && this.endsWith(this.mergedIds[rank], left, right))) return slot;
    }
  }

  /** Whether token `merged`'s text is `left`'s followed by `right`'s, given that it starts with `left`'s. */
  private endsWith(merged: number, left: number, right: number): boolean {
    const { data, ends } = this.tokens;
    const rightStart = this.tokens.start(right);
    const length = ends[right] - rightStart;
    const mergedEnd = ends[merged];
    if (mergedEnd - this.tokens.start(merged) !== ends[left] - this.tokens.start(left) + length) return false;
    for (let k = 1; k <= length; k++) if (data[mergedEnd - k] !== data[rightStart + length - k]) return false;
    return true;
  }
}

/** A binary min-heap of numbers. */
class MinHeap {
  private readonly items: number[] = [];

  get size(): number {
    return this.items.length;
  }

  push(value: number): void {
    const items = this.items;
    let i = items.push(value) - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (items[parent] <= value) break;
      items[i] = items[parent];
      i = parent;
    }
    items[i] = value;
  }

  pop(): number {
    const items = this.items;
    const top = items[0];
    const last = items.pop() as number;
    if (items.length > 0) {
      let i = 0;
      for (;;) {
        let child = 2 * i + 1;
        if (child >= items.length) break;
        if (child + 1 < items.length && items[child + 1] < items[child]) child++;
        if (items[child] >= last) break;
        items[i] = items[child];
        i = child;
      }
      items[i] = last;
    }
    return top;
  }
}
