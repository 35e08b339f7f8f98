/**
 * Reads a tokenizer.json. A BPE model's vocabulary and merges (150k entries each for Qwen) are read
 * from the file's bytes straight into StringTables; only the rest goes through JSON.parse. Parsing
 * the whole file would make a string per entry and an object keyed by the vocabulary, a passing
 * heap many times the tables' size that also leaves V8's young generation at its largest for good.
 */
import { isUtf8 } from "node:buffer";
import { StringIndex, StringTable, StringTableBuilder } from "../loaders/string-table.js";

/** A vocabulary as its token texts and their ids, entry by entry. */
export interface VocabTable {
  texts: StringTable;
  ids: Int32Array;
}

export interface BpeTables {
  vocab: VocabTable;
  /** "left right", highest priority first (the list form ["left", "right"] joined by a space). */
  merges: StringTable;
}

export interface TokenizerJsonFile {
  /** The file's JSON; when `bpe` is set, with model.vocab and model.merges left empty. */
  json: Record<string, unknown>;
  /** The vocabulary and merges, read from the bytes, when they are an object and a list. */
  bpe: BpeTables | undefined;
  /** The whole file parsed, vocabulary and merges included. */
  parseWhole(): Record<string, unknown>;
}

/** Thrown where the bytes are not JSON this reader takes; the caller parses the file whole instead. */
class NotReadable extends Error {}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COLON = 0x3a;
const COMMA = 0x2c;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const SPACE = 0x20;
const ESCAPED: Record<number, number> = { 0x22: 0x22, 0x5c: 0x5c, 0x2f: 0x2f, 0x62: 0x08, 0x66: 0x0c, 0x6e: 0x0a, 0x72: 0x0d, 0x74: 0x09 };
/** Deeper nesting is not a tokenizer's; such a file is parsed whole (the scanner recurses). */
const MAX_DEPTH = 256;
/** Token ids past this are not a real vocabulary's: such a vocabulary is left to the library. */
export const MAX_TOKEN_ID = 1 << 24;

/**
 * Splits tokenizer.json's `bytes` (the file's contents). `parse` is JSON.parse with the caller's
 * error for malformed JSON; it sees the file without its vocabulary and merges, or the whole file
 * where they cannot be read apart (not UTF-8, not an object and a list, or malformed).
 */
export function splitTokenizerJson(bytes: Uint8Array, parse: (text: string) => Record<string, unknown>): TokenizerJsonFile {
  const parseWhole = () => parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("utf8"));
  try {
    const spans = isUtf8(bytes) ? new Scanner(bytes).modelSpans() : undefined;
    // Vocabulary before merges is the order every writer uses; the other order is read whole.
    if (spans?.vocab && spans.merges && spans.vocab.end <= spans.merges.start) {
      const bpe = { vocab: readVocab(bytes, spans.vocab), merges: readMerges(bytes, spans.merges) };
      const rest = Buffer.concat([
        bytes.subarray(0, spans.vocab.start),
        Buffer.from("{}"),
        bytes.subarray(spans.vocab.end, spans.merges.start),
        Buffer.from("[]"),
        bytes.subarray(spans.merges.end),
      ]);
      let json: Record<string, unknown>;
      try {
        json = parse(rest.toString("utf8"));
      } catch (err) {
        // The whole file fails too, with positions that are the file's own.
        parseWhole();
        throw err;
      }
      return { json, bpe, parseWhole };
    }
  } catch (err) {
    if (!(err instanceof NotReadable)) throw err;
  }
  return { json: parseWhole(), bpe: undefined, parseWhole };
}

/** The vocabulary and merges of a tokenizer.json already parsed, as tables. */
export function bpeTablesOf(model: { vocab?: unknown; merges?: unknown }): BpeTables | undefined {
  const { vocab, merges } = model;
  if (typeof vocab !== "object" || vocab === null || Array.isArray(vocab) || !Array.isArray(merges)) return undefined;
  const entries = Object.entries(vocab as Record<string, unknown>);
  if (!entries.every(([, id]) => Number.isInteger(id) && (id as number) >= 0 && (id as number) < MAX_TOKEN_ID)) return undefined;
  if (!merges.every((m) => typeof m === "string" || (Array.isArray(m) && m.length === 2 && m.every((s) => typeof s === "string"))))
    return undefined;
  return {
    vocab: { texts: StringTable.of(entries.map(([text]) => text)), ids: Int32Array.from(entries, ([, id]) => id as number) },
    merges: StringTable.of((merges as (string | string[])[]).map((m) => (Array.isArray(m) ? m.join(" ") : m))),
  };
}

/** Where a value lies in the bytes, and how many members or items it has. */
interface Span {
  start: number;
  end: number;
  entries: number;
}

/** Walks JSON text as bytes, without building values. */
class Scanner {
  pos = 0;
  private depth = 0;

  constructor(readonly bytes: Uint8Array) {}

  /** Where the value of model.vocab and model.merges lie, when the top level is an object. */
  modelSpans(): { vocab?: Span; merges?: Span } {
    let spans: { vocab?: Span; merges?: Span } = {};
    this.members(() => {
      const key = this.key();
      // A repeated key: JSON.parse keeps the last, and so does this.
      if (key === "model") spans = {};
      if (key !== "model" || this.peek() !== OPEN_BRACE) return this.skipValue();
      this.members(() => {
        const inner = this.key();
        const open = this.peek();
        const start = this.pos;
        let entries = 0;
        if (inner === "vocab" && open === OPEN_BRACE) this.members(() => (entries++, this.readKey(), this.skipValue()));
        else if (inner === "merges" && open === OPEN_BRACKET) this.items(() => (entries++, this.skipValue()));
        else {
          this.skipValue();
          if (inner === "vocab" || inner === "merges") delete spans[inner];
          return;
        }
        spans[inner] = { start, end: this.pos, entries };
      });
    });
    this.space();
    if (this.pos !== this.bytes.length) this.fail();
    return spans;
  }

  /** Calls `member` for each member of the object at pos, which it must read whole. */
  members(member: () => void): void {
    this.container(OPEN_BRACE, CLOSE_BRACE, member);
  }

  /** Calls `item` for each item of the list at pos, which it must read whole. */
  items(item: () => void): void {
    this.container(OPEN_BRACKET, CLOSE_BRACKET, item);
  }

  private container(open: number, close: number, each: () => void): void {
    this.expect(open);
    if (++this.depth > MAX_DEPTH) this.fail();
    if (this.peek() === close) this.pos++;
    else {
      for (;;) {
        each();
        const next = this.next();
        if (next === close) break;
        if (next !== COMMA) this.fail();
      }
    }
    this.depth--;
  }

  /** An object key and the colon after it. */
  key(): string {
    const text = new ByteSink();
    this.readKey(text);
    return text.toString();
  }

  /** An object key and the colon after it, the key appended to `out` where one is given. */
  readKey(out?: ByteSink): void {
    if (this.peek() !== QUOTE) this.fail();
    this.readString(out);
    this.expect(COLON);
  }

  skipValue(): void {
    const c = this.peek();
    if (c === QUOTE) this.readString();
    else if (c === OPEN_BRACE) this.members(() => (this.readKey(), this.skipValue()));
    else if (c === OPEN_BRACKET) this.items(() => this.skipValue());
    else {
      // A number or a literal: its characters up to the next delimiter, checked by JSON.parse
      // when it is kept, and not kept otherwise (vocab ids are read by readInteger).
      const start = this.pos;
      while (this.pos < this.bytes.length && !isDelimiter(this.bytes[this.pos])) this.pos++;
      if (this.pos === start) this.fail();
    }
  }

  /** Reads the string at pos, and appends it unescaped to `out` as UTF-8 where one is given. */
  readString(out?: ByteSink): void {
    this.expect(QUOTE);
    const { bytes } = this;
    for (;;) {
      const c = bytes[this.pos++];
      if (c === QUOTE) return;
      if (c === undefined || c < SPACE) this.fail();
      if (c !== BACKSLASH) {
        out?.push(c);
        continue;
      }
      const e = bytes[this.pos++];
      if (e !== 0x75) {
        const unescaped = ESCAPED[e];
        if (unescaped === undefined) this.fail();
        out?.push(unescaped);
        continue;
      }
      let unit = this.hex4();
      if (unit >= 0xd800 && unit < 0xdc00 && bytes[this.pos] === BACKSLASH && bytes[this.pos + 1] === 0x75) {
        const save = this.pos;
        this.pos += 2;
        const low = this.hex4();
        if (low >= 0xdc00 && low < 0xe000) unit = 0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00);
        else this.pos = save;
      }
      // A lone surrogate becomes U+FFFD, as encoding the parsed string as UTF-8 makes it.
      out?.codePoint(unit >= 0xd800 && unit < 0xe000 ? 0xfffd : unit);
    }
  }

  /** A non-negative integer below MAX_TOKEN_ID. */
  readInteger(): number {
    this.space();
    const start = this.pos;
    let n = 0;
    while (this.bytes[this.pos] >= 0x30 && this.bytes[this.pos] <= 0x39 && n < MAX_TOKEN_ID) n = n * 10 + this.bytes[this.pos++] - 0x30;
    const digits = this.pos - start;
    if (digits === 0 || n >= MAX_TOKEN_ID || (digits > 1 && this.bytes[start] === 0x30) || !isDelimiter(this.bytes[this.pos] ?? SPACE))
      throw new NotReadable();
    return n;
  }

  peek(): number | undefined {
    this.space();
    return this.bytes[this.pos];
  }

  next(): number | undefined {
    this.space();
    return this.bytes[this.pos++];
  }

  expect(c: number): void {
    if (this.next() !== c) this.fail();
  }

  space(): void {
    this.pos += firstNonSpace(this.bytes, this.pos);
  }

  private hex4(): number {
    const text = String.fromCharCode(...this.bytes.subarray(this.pos, this.pos + 4));
    if (!/^[0-9a-fA-F]{4}$/.test(text)) this.fail();
    this.pos += 4;
    return parseInt(text, 16);
  }

  fail(): never {
    throw new NotReadable();
  }
}

/** Offset of the first non-whitespace byte from `pos`. */
function firstNonSpace(bytes: Uint8Array, pos: number): number {
  let i = pos;
  while (bytes[i] === SPACE || bytes[i] === 0x0a || bytes[i] === 0x0d || bytes[i] === 0x09) i++;
  return i - pos;
}

function isDelimiter(c: number): boolean {
  return c === COMMA || c === CLOSE_BRACE || c === CLOSE_BRACKET || c === SPACE || c === 0x0a || c === 0x0d || c === 0x09;
}

/** Bytes gathered for one string at a time, then added to a StringTableBuilder. */
class ByteSink {
  bytes = new Uint8Array(256);
  length = 0;

  push(b: number): void {
    if (this.length === this.bytes.length) {
      const grown = new Uint8Array(2 * this.bytes.length);
      grown.set(this.bytes);
      this.bytes = grown;
    }
    this.bytes[this.length++] = b;
  }

  toString(): string {
    return new TextDecoder().decode(this.bytes.subarray(0, this.length));
  }

  codePoint(cp: number): void {
    if (cp < 0x80) this.push(cp);
    else if (cp < 0x800) {
      this.push(0xc0 | (cp >> 6));
      this.push(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
      this.push(0xe0 | (cp >> 12));
      this.push(0x80 | ((cp >> 6) & 0x3f));
      this.push(0x80 | (cp & 0x3f));
    } else {
      this.push(0xf0 | (cp >> 18));
      this.push(0x80 | ((cp >> 12) & 0x3f));
      this.push(0x80 | ((cp >> 6) & 0x3f));
      this.push(0x80 | (cp & 0x3f));
    }
  }
}

function readVocab(bytes: Uint8Array, span: Span): VocabTable {
  // Unescaped strings are never longer than the text that spells them.
  const texts = new StringTableBuilder(span.entries, span.end - span.start);
  const ids = new Int32Array(span.entries);
  const scanner = new Scanner(bytes.subarray(0, span.end));
  scanner.pos = span.start;
  const text = new ByteSink();
  let i = 0;
  scanner.members(() => {
    text.length = 0;
    scanner.readKey(text);
    texts.add(text.bytes, 0, text.length);
    ids[i++] = scanner.readInteger();
  });
  const table = texts.finish();
  // JSON.parse keeps one entry of a repeated key, and orders entries with integer-like keys first,
  // which decides which of two keys sharing an id is kept: files with either are parsed whole.
  if (new StringIndex(table).repeats > 0 || repeatsAny(ids)) throw new NotReadable();
  return { texts: table, ids };
}

function repeatsAny(ids: Int32Array): boolean {
  let max = -1;
  for (const id of ids) max = Math.max(max, id);
  const seen = new Uint8Array(max + 1);
  for (const id of ids) if (seen[id]++ > 0) return true;
  return false;
}

function readMerges(bytes: Uint8Array, span: Span): StringTable {
  const merges = new StringTableBuilder(span.entries, span.end - span.start);
  const scanner = new Scanner(bytes.subarray(0, span.end));
  scanner.pos = span.start;
  const merge = new ByteSink();
  scanner.items(() => {
    merge.length = 0;
    if (scanner.peek() === QUOTE) scanner.readString(merge);
    else {
      // The list form: exactly two strings, joined by a space.
      let parts = 0;
      scanner.items(() => {
        if (parts++ === 1) merge.push(SPACE);
        if (scanner.peek() !== QUOTE) scanner.fail();
        scanner.readString(merge);
      });
      if (parts !== 2) scanner.fail();
    }
    merges.add(merge.bytes, 0, merge.length);
  });
  return merges.finish();
}
