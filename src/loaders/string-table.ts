/**
 * A list of strings stored as one block of UTF-8 bytes and their end offsets: a large vocabulary
 * and its merges take several times less memory this way than as JavaScript strings.
 */
export class StringTable implements Iterable<string> {
  private static readonly decoder = new TextDecoder("utf-8", { ignoreBOM: true });

  /** `ends[i]` is where string i ends in `data`; it starts where string i - 1 ends. */
  constructor(
    readonly data: Uint8Array,
    readonly ends: Uint32Array,
  ) {}

  static of(strings: readonly string[]): StringTable {
    const builder = new StringTableBuilder(strings.length);
    const encoder = new TextEncoder();
    for (const s of strings) builder.add(encoder.encode(s));
    return builder.finish();
  }

  get length(): number {
    return this.ends.length;
  }

  /** Where string i starts in `data`. */
  start(i: number): number {
    return i === 0 ? 0 : this.ends[i - 1];
  }

  /** The UTF-8 bytes of string i (a view, not a copy). */
  bytes(i: number): Uint8Array {
    return this.data.subarray(this.start(i), this.ends[i]);
  }

  at(i: number): string {
    return StringTable.decoder.decode(this.bytes(i));
  }

  toArray(): string[] {
    return Array.from(this);
  }

  *[Symbol.iterator](): Iterator<string> {
    for (let i = 0; i < this.length; i++) yield this.at(i);
  }
}

/** Collects a known number of strings' bytes into a StringTable. */
export class StringTableBuilder {
  private data: Uint8Array;
  private readonly ends: Uint32Array;
  private size = 0;
  private count = 0;

  /** `dataBytes`: the strings' total UTF-8 length where it is known, a first guess otherwise. */
  constructor(
    private readonly capacity: number,
    dataBytes = capacity * 8,
  ) {
    this.ends = new Uint32Array(capacity);
    this.data = new Uint8Array(dataBytes);
  }

  /** Adds the string whose UTF-8 bytes are source[from, to). */
  add(source: Uint8Array, from = 0, to = source.length): void {
    if (this.count === this.capacity) throw new Error(`StringTableBuilder: more than the ${this.capacity} strings announced`);
    const length = to - from;
    if (this.size + length > this.data.byteLength) {
      const grown = new Uint8Array(Math.max(this.data.byteLength * 2, this.size + length, 16));
      grown.set(this.data.subarray(0, this.size));
      this.data = grown;
    }
    // Strings are short: a loop copies them without making a view of the source for each.
    for (let i = 0; i < length; i++) this.data[this.size + i] = source[from + i];
    this.size += length;
    this.ends[this.count++] = this.size;
  }

  finish(): StringTable {
    if (this.count !== this.capacity) throw new Error(`StringTableBuilder: ${this.count} of the ${this.capacity} strings announced`);
    return new StringTable(this.size === this.data.byteLength ? this.data : this.data.slice(0, this.size), this.ends);
  }
}

/** Positions of a StringTable's strings by their bytes: open addressing, FNV-1a hashed. */
export class StringIndex {
  /** How many strings repeat an earlier one; the index holds the later position. */
  readonly repeats: number = 0;
  private readonly slots: Int32Array;
  private readonly mask: number;

  /** Indexes the strings for which `include` (default: all) is true. */
  constructor(
    private readonly table: StringTable,
    include: (i: number) => boolean = () => true,
  ) {
    this.slots = new Int32Array(hashTableSize(table.length)).fill(-1);
    this.mask = this.slots.length - 1;
    for (let i = 0; i < table.length; i++) {
      if (!include(i)) continue;
      const slot = this.slotOf(table.data, table.start(i), table.ends[i]);
      if (this.slots[slot] !== -1) this.repeats++;
      this.slots[slot] = i;
    }
  }

  /** The position of the string spelled by bytes[from, to), or -1. */
  find(bytes: Uint8Array, from = 0, to = bytes.length): number {
    return this.slots[this.slotOf(bytes, from, to)];
  }

  /** The slot holding the string spelled by bytes[from, to), or the empty slot where it would go. */
  private slotOf(bytes: Uint8Array, from: number, to: number): number {
    let hash = 0x811c9dc5;
    for (let i = from; i < to; i++) hash = Math.imul(hash ^ bytes[i], 0x01000193);
    const { data, ends } = this.table;
    for (let slot = hash & this.mask; ; slot = (slot + 1) & this.mask) {
      const i = this.slots[slot];
      if (i === -1) return slot;
      const start = this.table.start(i);
      if (ends[i] - start !== to - from) continue;
      let k = 0;
      while (k < to - from && data[start + k] === bytes[from + k]) k++;
      if (k === to - from) return slot;
    }
  }
}

/** Slots for an open-addressing table of n keys: a power of two at least 1.5 × n, so probes stay short. */
export function hashTableSize(n: number): number {
  let size = 16;
  while (size < n * 1.5) size *= 2;
  return size;
}
