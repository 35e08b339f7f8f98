/**
 * Which KV block belongs to whom: a pool of block ids with reference counts, and the prefix cache.
 *
 * A block that is full of known tokens is keyed by a hash of its parent block's key and its own
 * token ids, so a key names a whole prefix, not just 16 tokens. Cached blocks are shared between
 * sequences (a reference each) and, once no sequence holds them, stay findable until the pool
 * needs them back, least recently used first.
 */
import { createHash } from "node:crypto";

export class BlockPool {
  private readonly refs: Int32Array;
  /** Prefix key of each block that holds one. */
  private readonly keyOf: (string | undefined)[];
  private readonly byKey = new Map<string, number>();
  /** Blocks with no references and no key, ready to hand out. */
  private readonly free: number[] = [];
  /** Blocks with no references but a key, oldest use first (a Map keeps insertion order). */
  private readonly evictable = new Map<number, true>();

  constructor(readonly blocks: number) {
    this.refs = new Int32Array(blocks);
    this.keyOf = new Array<string | undefined>(blocks);
    for (let b = blocks - 1; b >= 0; b--) this.free.push(b);
  }

  /** Blocks that can be handed out now (free, or cached but unused). */
  get available(): number {
    return this.free.length + this.evictable.size;
  }

  get used(): number {
    return this.blocks - this.available;
  }

  /** A block of one's own (refcount 1), evicting the least recently used cached block if need be; undefined when none is left. */
  allocate(): number | undefined {
    let block = this.free.pop();
    if (block === undefined) {
      const oldest = this.evictable.keys().next();
      if (oldest.done) return undefined;
      block = oldest.value;
      this.evictable.delete(block);
      this.byKey.delete(this.keyOf[block]!);
      this.keyOf[block] = undefined;
    }
    this.refs[block] = 1;
    return block;
  }

  /** Drops one reference; a block no one holds becomes free, or evictable if it is cached. */
  release(block: number): void {
    if (this.refs[block] <= 0) throw new Error(`KV block ${block} released more often than it was taken`);
    if (--this.refs[block] > 0) return;
    if (this.keyOf[block] === undefined) this.free.push(block);
    else this.evictable.set(block, true);
  }

  /** The cached block of this prefix key with a new reference, or undefined. */
  lookup(key: string): number | undefined {
    const block = this.byKey.get(key);
    if (block === undefined) return undefined;
    if (this.refs[block] === 0) this.evictable.delete(block);
    this.refs[block]++;
    return block;
  }

  /** Makes a full block findable by its prefix key (unless another block already holds that prefix). */
  register(block: number, key: string): void {
    if (this.keyOf[block] !== undefined || this.byKey.has(key)) return;
    this.keyOf[block] = key;
    this.byKey.set(key, block);
  }

  refCount(block: number): number {
    return this.refs[block];
  }

  isCached(block: number): boolean {
    return this.keyOf[block] !== undefined;
  }
}

/** The prefix key of a full block: its parent's key and its tokens. */
export function blockKey(parent: string | undefined, tokens: ArrayLike<number>): string {
  const h = createHash("sha256");
  h.update(parent ?? "root");
  h.update(Int32Array.from(tokens));
  return h.digest("base64");
}
