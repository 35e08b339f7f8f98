/**
 * The native paged KV cache: storeKV's f16/bf16 rounding against src/tensor/dtype.ts, and
 * pagedAttention against the TypeScript scaledDotProductAttention on K/V gathered densely from
 * the blocks, for f32, f16 and bf16 caches, GQA, and lengths around block and 64-key tile
 * boundaries. Then batch invariance: a sequence's rows are the same bits alone or among others,
 * whole or chunked, on 1 or 2 threads. Unwritten cache slots hold NaN, so reading one shows.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { NativeKvType, nativeKernels, nativeUnavailableReason, type NativeAddon, type NativeContext } from "../src/kernels/native.js";
import { causalMask, scaledDotProductAttention } from "../src/layers/attention.js";
import { Random } from "../src/generation/random.js";
import { bf16ToNumber, f16ToNumber, numberToBf16, numberToF16 } from "../src/tensor/dtype.js";
import { Tensor } from "../src/tensor/tensor.js";
import { assertClose, randomTensor } from "./support/numeric.js";
import { bitDifferences } from "./support/native-weights.js";

const addon = nativeKernels();
const skip = addon ? false : `native kernels unavailable: ${nativeUnavailableReason()}`;
const isas = addon ? addon.availableIsas() : [];
type KvName = keyof typeof NativeKvType;
const KV_NAMES = Object.keys(NativeKvType) as KvName[];

interface Shape {
  Hkv: number;
  G: number;
  D: number;
  blockSize: number;
}

/** One layer's K and V caches of `blocks` blocks, every slot NaN until written. */
class Cache {
  readonly k: Float32Array | Uint16Array;
  readonly v: Float32Array | Uint16Array;
  readonly kvType: number;

  constructor(
    readonly kv: KvName,
    readonly blocks: number,
    readonly s: Shape,
  ) {
    const n = blocks * s.Hkv * s.blockSize * s.D;
    this.kvType = NativeKvType[kv];
    this.k = kv === "f32" ? new Float32Array(n).fill(NaN) : new Uint16Array(n).fill(kv === "f16" ? 0x7e00 : 0x7fc0);
    this.v = this.k.slice();
  }

  /** Stores k, v [T, H_kv, D] of positions [from, from + T) of a sequence with this block table. */
  store(ctx: NativeContext, table: Int32Array, from: number, k: Float32Array, v: Float32Array, T: number): void {
    const bs = this.s.blockSize;
    const slots = Int32Array.from({ length: T }, (_, t) => table[Math.floor((from + t) / bs)] * bs + ((from + t) % bs));
    ctx.storeKV(this.k, this.v, this.kvType, k, v, slots, T, this.s.Hkv, this.s.D, bs);
  }

  /** Keys and values 0 .. S − 1 of a sequence, read from its blocks in JavaScript, as [H_kv, S, D]. */
  gather(table: Int32Array, S: number): { k: Tensor; v: Tensor } {
    const { Hkv, D, blockSize: bs } = this.s;
    const read = (src: Float32Array | Uint16Array, i: number): number =>
      this.kv === "f32" ? src[i] : this.kv === "f16" ? f16ToNumber(src[i]) : bf16ToNumber(src[i]);
    const k = new Float32Array(Hkv * S * D);
    const v = new Float32Array(Hkv * S * D);
    for (let h = 0; h < Hkv; h++)
      for (let p = 0; p < S; p++)
        for (let d = 0; d < D; d++) {
          const at = ((table[Math.floor(p / bs)] * Hkv + h) * bs + (p % bs)) * D + d;
          k[(h * S + p) * D + d] = read(this.k, at);
          v[(h * S + p) * D + d] = read(this.v, at);
        }
    return { k: new Tensor(k, [Hkv, S, D]), v: new Tensor(v, [Hkv, S, D]) };
  }
}

/** A sequence: its keys and values for every position, and query rows for the last qLen of them. */
interface Seq {
  kvLen: number;
  qLen: number;
  table: Int32Array;
  k: Float32Array; // [kvLen, H_kv, D]
  v: Float32Array;
  q: Float32Array; // [qLen, H, D]
}

/** Sequences of the given (kvLen, qLen), their blocks drawn in shuffled order from one pool. */
function makeSeqs(s: Shape, lens: [number, number][], seed: number): { seqs: Seq[]; blocks: number } {
  const used = lens.map(([kvLen]) => Math.ceil(kvLen / s.blockSize));
  const blocks = used.reduce((a, b) => a + b, 0) + 3;
  const random = new Random(seed);
  const order = Array.from({ length: blocks }, (_, i) => i);
  for (let i = blocks - 1; i > 0; i--) {
    const j = random.nextUint32() % (i + 1);
    [order[i], order[j]] = [order[j], order[i]];
  }
  let at = 0;
  const H = s.Hkv * s.G;
  const seqs = lens.map(([kvLen, qLen], i) => ({
    kvLen,
    qLen,
    table: Int32Array.from(order.slice(at, (at += used[i]))),
    k: randomTensor([kvLen, s.Hkv, s.D], seed + 3 * i + 1).toFloat32Array(),
    v: randomTensor([kvLen, s.Hkv, s.D], seed + 3 * i + 2).toFloat32Array(),
    q: randomTensor([qLen, H, s.D], seed + 3 * i + 3, 2).toFloat32Array(),
  }));
  return { seqs, blocks };
}

/** Runs pagedAttention over `seqs` in one call, their rows in this order; returns each one's out rows. */
function attend(ctx: NativeContext, cache: Cache, seqs: readonly Seq[], scale: number, firstRow = 0, firstTable = 0): Float32Array[] {
  const { Hkv, G, D, blockSize } = cache.s;
  const H = Hkv * G;
  const rows = firstRow + seqs.reduce((n, q) => n + q.qLen, 0);
  const q = new Float32Array(rows * H * D);
  const out = new Float32Array(rows * H * D).fill(NaN);
  const tables = new Int32Array(firstTable + seqs.reduce((n, q) => n + q.table.length, 0)).fill(-1);
  const desc = new Int32Array(4 * seqs.length);
  let row = firstRow;
  let entry = firstTable;
  seqs.forEach((sq, i) => {
    q.set(sq.q, row * H * D);
    tables.set(sq.table, entry);
    desc.set([row, sq.qLen, sq.kvLen, entry], 4 * i);
    row += sq.qLen;
    entry += sq.table.length;
  });
  ctx.pagedAttention(out, q, cache.k, cache.v, cache.kvType, desc, tables, H, Hkv, D, blockSize, scale);
  let at = firstRow;
  return seqs.map((sq) => out.slice(at * H * D, (at += sq.qLen) * H * D));
}

/** scaledDotProductAttention of a sequence's query rows on its K/V gathered from the cache, as [qLen, H, D]. */
function reference(cache: Cache, sq: Seq, scale: number): Float32Array {
  const { Hkv, G, D } = cache.s;
  const H = Hkv * G;
  const { k, v } = cache.gather(sq.table, sq.kvLen);
  const q = new Tensor(sq.q, [sq.qLen, H, D]).transpose(0, 1).expandDims(0);
  return scaledDotProductAttention(q, k.expandDims(0), v.expandDims(0), { scale, mask: causalMask(sq.qLen, sq.kvLen) })
    .reshape([H, sq.qLen, D])
    .transpose(0, 1)
    .toFloat32Array();
}

function fill(ctx: NativeContext, cache: Cache, seqs: readonly Seq[]): void {
  for (const sq of seqs) cache.store(ctx, sq.table, 0, sq.k, sq.v, sq.kvLen);
}

test("storeKV stores f16 and bf16 bits as src/tensor/dtype.ts rounds them, with NaN and infinities", { skip }, () => {
  const ctx = (addon as NativeAddon).createContext({ threads: 1 });
  const special = [
    0,
    -0,
    1,
    -1,
    65504,
    65519,
    65520,
    1e9,
    -1e9,
    6.1e-5,
    2 ** -24,
    2 ** -25,
    3 * 2 ** -26,
    2 ** -26,
    1e-8,
    1 + 2 ** -11,
    1 + 3 * 2 ** -11,
    1 + 2 ** -8,
    1 + 3 * 2 ** -8,
    3.4e38,
    1.2e-38,
    1e-45,
    Infinity,
    -Infinity,
    NaN,
  ];
  const random = new Random(5);
  const values = new Float32Array(4096);
  values.set(special);
  // Every magnitude f32 holds, so every rounding branch (subnormal, carry into the exponent, overflow) is met.
  for (let i = special.length; i < values.length; i++) values[i] = (random.next() * 2 - 1) * 2 ** (Math.floor(random.next() * 280) - 150);
  // NaNs whose payload is in the low bits only (truncated, they would read as infinity) and a
  // negative one: they cannot pass through a JavaScript number, but must stay NaN.
  const nans = [0x7f800001, 0xff800001, 0xffc01234];
  new Uint32Array(values.buffer).set(nans, values.length - nans.length);
  const [Hkv, D, blockSize] = [2, 16, 8];
  const T = values.length / (Hkv * D);
  const slots = Int32Array.from({ length: T }, (_, t) => t);
  for (const [kv, convert, isNaN] of [
    ["f16", numberToF16, (b: number) => (b & 0x7c00) === 0x7c00 && (b & 0x3ff) !== 0],
    ["bf16", numberToBf16, (b: number) => (b & 0x7f80) === 0x7f80 && (b & 0x7f) !== 0],
  ] as const) {
    const cache = new Cache(kv, T / blockSize, { Hkv, G: 1, D, blockSize });
    const v = values.map((x) => -x);
    ctx.storeKV(cache.k, cache.v, cache.kvType, values, v, slots, T, Hkv, D, blockSize);
    // Token t, head h lands at block t / 8, offset t % 8: [block, h, offset, d].
    const at = (t: number, h: number, d: number): number => ((Math.floor(t / blockSize) * Hkv + h) * blockSize + (t % blockSize)) * D + d;
    for (let t = 0; t < T; t++)
      for (let h = 0; h < Hkv; h++)
        for (let d = 0; d < D; d++) {
          const i = (t * Hkv + h) * D + d;
          const [kBits, vBits] = [cache.k[at(t, h, d)], cache.v[at(t, h, d)]];
          if (i >= values.length - nans.length) {
            assert.ok(isNaN(kBits), `${kv}: NaN with a payload stored as ${kBits.toString(16)}`);
            continue;
          }
          assert.equal(
            kBits,
            convert(values[i]),
            `${kv} of ${values[i]}: ${kBits.toString(16)}, expected ${convert(values[i]).toString(16)}`,
          );
          assert.equal(vBits, convert(v[i]), `${kv} of ${v[i]}`);
        }
  }
  // f32 caches take the values' bits as they are, the NaN's payload too.
  const cache = new Cache("f32", T / blockSize, { Hkv, G: 1, D, blockSize });
  ctx.storeKV(cache.k, cache.v, cache.kvType, values, values, slots, T, Hkv, D, blockSize);
  const stored = new Uint32Array(cache.k.buffer);
  const given = new Uint32Array(values.buffer);
  for (let t = 0; t < T; t++)
    for (let h = 0; h < Hkv; h++)
      for (let d = 0; d < D; d++) {
        const at = ((Math.floor(t / blockSize) * Hkv + h) * blockSize + (t % blockSize)) * D + d;
        assert.equal(stored[at], given[(t * Hkv + h) * D + d], `f32 slot ${t}, head ${h}, ${d}`);
      }
});

const SHAPES: Shape[] = [
  { Hkv: 2, G: 1, D: 8, blockSize: 16 },
  { Hkv: 2, G: 7, D: 64, blockSize: 16 },
  { Hkv: 1, G: 4, D: 32, blockSize: 8 },
  { Hkv: 3, G: 2, D: 24, blockSize: 64 },
  { Hkv: 1, G: 2, D: 16, blockSize: 12 },
  { Hkv: 2, G: 3, D: 20, blockSize: 1 },
];
// Every length around a block (16) and a 64-key tile, each as a whole prompt, one decode row and a chunk of 5.
const LENGTHS = [1, 15, 16, 17, 63, 64, 65, 129];
const LENS: [number, number][] = LENGTHS.flatMap(
  (n) =>
    [
      [n, n],
      [n, 1],
      [n, Math.min(n, 5)],
    ] as [number, number][],
);

describe("pagedAttention equals scaledDotProductAttention on the gathered K/V", { skip }, () => {
  for (const s of SHAPES)
    for (const kv of KV_NAMES) {
      test(`${kv} cache, H_kv=${s.Hkv}, G=${s.G}, D=${s.D}, blockSize=${s.blockSize}, on every ISA`, () => {
        const a = addon as NativeAddon;
        const { seqs, blocks } = makeSeqs(s, LENS, s.D + s.G);
        const cache = new Cache(kv, blocks, s);
        const scale = 1 / Math.sqrt(s.D);
        fill(a.createContext({ threads: 1 }), cache, seqs);
        const expected = seqs.map((sq) => reference(cache, sq, scale));
        for (const isa of isas) {
          const outs = attend(a.createContext({ isa }), cache, seqs, scale);
          seqs.forEach((sq, i) => {
            let scaleOf = 1;
            for (const e of expected[i]) scaleOf = Math.max(scaleOf, Math.abs(e));
            // f32 sums in another order than the reference's, and exp to 2e-7.
            assertClose(
              new Tensor(outs[i], [outs[i].length]),
              new Tensor(expected[i], [expected[i].length]),
              2e-6 * scaleOf,
              `${isa}: kvLen ${sq.kvLen}, qLen ${sq.qLen}`,
            );
          });
        }
      });
    }
});

for (const isa of isas) {
  describe(`pagedAttention is batch-invariant (${isa})`, { skip }, () => {
    for (const [kv, s] of [
      ["f32", { Hkv: 2, G: 7, D: 64, blockSize: 16 }],
      ["f16", { Hkv: 1, G: 3, D: 32, blockSize: 8 }],
      ["bf16", { Hkv: 2, G: 2, D: 16, blockSize: 64 }],
    ] as [KvName, Shape][]) {
      const label = `${kv}, G=${s.G}, D=${s.D}, blockSize=${s.blockSize}`;
      const a = addon as NativeAddon;
      const contexts = addon ? [a.createContext({ isa, threads: 1 }), a.createContext({ isa, threads: 2 })] : [];
      const scale = 1 / Math.sqrt(s.D);
      // A, a 150-token prompt, beside a decode step, a chunk mid-prompt and a long decode.
      const lens: [number, number][] = [
        [150, 150],
        [40, 1],
        [97, 20],
        [200, 1],
      ];

      test(`${label}: a sequence's rows are the same alone and among others, on 1 and 2 threads`, () => {
        const { seqs, blocks } = makeSeqs(s, lens, 11);
        const cache = new Cache(kv, blocks, s);
        fill(contexts[0], cache, seqs);
        const alone = seqs.map((sq) => attend(contexts[0], cache, [sq], scale)[0]);
        for (const ctx of contexts) {
          const t = ctx.info().threads;
          seqs.forEach((sq, i) =>
            assert.deepEqual(bitDifferences(attend(ctx, cache, [sq], scale)[0], alone[i]), [], `seq ${i} alone, ${t} threads`),
          );
          // Other rows and tables before them, and the sequences in another order.
          const order = [2, 0, 3, 1];
          const together = attend(
            ctx,
            cache,
            order.map((i) => seqs[i]),
            scale,
            3,
            5,
          );
          order.forEach((i, j) => assert.deepEqual(bitDifferences(together[j], alone[i]), [], `seq ${i} among others, ${t} threads`));
        }
      });

      test(`${label}: a prompt's rows are the same whole and in chunks of 1, 7, 16, 33, … against a cache filled step by step`, () => {
        const P = 150;
        const { seqs, blocks } = makeSeqs(s, [[P, P]], 13);
        const [whole] = seqs;
        const full = new Cache(kv, blocks, s);
        fill(contexts[0], full, seqs);
        const expected = attend(contexts[0], full, [whole], scale)[0];
        const { Hkv, D } = s;
        const H = Hkv * s.G;
        for (const chunks of [
          [1, 7, 16, 33, 64, 29],
          [64, 1, 1, 84],
          [17, 47, 86],
        ]) {
          for (const ctx of contexts) {
            const cache = new Cache(kv, blocks, s);
            const got = new Float32Array(P * H * D);
            let done = 0;
            for (const c of chunks) {
              cache.store(ctx, whole.table, done, whole.k.subarray(done * Hkv * D), whole.v.subarray(done * Hkv * D), c);
              const step: Seq = { ...whole, kvLen: done + c, qLen: c, q: whole.q.subarray(done * H * D, (done + c) * H * D) };
              got.set(attend(ctx, cache, [step], scale)[0], done * H * D);
              done += c;
            }
            assert.equal(done, P);
            const diff = bitDifferences(got, expected);
            assert.deepEqual(
              diff,
              [],
              `chunks ${chunks}, ${ctx.info().threads} threads: first differing row ${Math.floor(diff[0] / (H * D))}`,
            );
          }
        }
      });
    }
  });
}

describe("pagedAttention and storeKV refuse bad arguments with one-line errors", { skip }, () => {
  const s: Shape = { Hkv: 2, G: 2, D: 8, blockSize: 4 };
  const H = 4;
  const make = () => {
    const cache = new Cache("f32", 6, s);
    const q = new Float32Array(5 * H * s.D);
    const out = new Float32Array(5 * H * s.D);
    return { cache, q, out };
  };
  const attendWith = (seqs: number[], tables: number[], over: Partial<{ H: number; Hkv: number; kvType: number; bs: number }> = {}) => {
    const { cache, q, out } = make();
    cache.k.fill(0);
    cache.v.fill(0);
    const k = over.kvType === 1 ? new Uint16Array(cache.k.length) : cache.k;
    (addon as NativeAddon)
      .createContext({ threads: 1 })
      .pagedAttention(
        out,
        q,
        k,
        over.kvType === 1 ? new Uint16Array(cache.v.length) : cache.v,
        over.kvType ?? 0,
        Int32Array.from(seqs),
        Int32Array.from(tables),
        over.H ?? H,
        over.Hkv ?? s.Hkv,
        s.D,
        over.bs ?? s.blockSize,
        1,
      );
  };
  const cases: [string, () => void, RegExp][] = [
    ["a valid call", () => attendWith([0, 5, 9, 0], [1, 3, 5]), /^$/],
    [
      "a block id past the cache",
      () => attendWith([0, 5, 9, 0], [1, 3, 6]),
      /block id 6 at blockTables\[2\] is outside the cache \(6 blocks\)/,
    ],
    ["a negative block id", () => attendWith([0, 1, 1, 0], [-1]), /block id -1/],
    ["a table too short for kvLen", () => attendWith([0, 5, 9, 1], [1, 3, 5]), /run past the block tables/],
    ["kvLen below qLen", () => attendWith([0, 5, 4, 0], [1, 3]), /need kvLen >= qLen >= 1/],
    ["qLen 0", () => attendWith([0, 0, 4, 0], [1]), /need kvLen >= qLen >= 1/],
    ["rows past q", () => attendWith([3, 3, 4, 0], [1]), /outside q and out \(5 rows\)/],
    ["a negative qStart", () => attendWith([-1, 1, 4, 0], [1]), /outside q and out/],
    ["two sequences on one row", () => attendWith([0, 2, 2, 0, 1, 1, 1, 0], [1]), /query row 1 belongs to an earlier sequence too/],
    ["seqs not in fours", () => attendWith([0, 1, 1], [1]), /4 int32 per sequence/],
    ["H not a multiple of Hkv", () => attendWith([0, 1, 1, 0], [1], { H: 3 }), /multiple of Hkv/],
    ["a cache not in whole blocks", () => attendWith([0, 1, 1, 0], [1], { bs: 5 }), /whole number of blocks/],
    ["an f16 kvType with Float32Array caches", () => attendWith([0, 1, 1, 0], [1], { kvType: 2 }), /Uint16Array/],
    ["an unknown kvType", () => attendWith([0, 1, 1, 0], [1], { kvType: 7 }), /kvType must be 0 \(f32\), 1 \(f16\) or 2 \(bf16\)/],
  ];
  for (const [what, run, message] of cases) {
    test(what, () => {
      if (message.source === "^$") return run();
      assert.throws(run, (err: Error) => {
        assert.match(err.message, message);
        assert.ok(!err.message.includes("\n"), `one line: ${err.message}`);
        return true;
      });
    });
  }

  test("storeKV: slots outside the cache, and arrays too small", () => {
    const ctx = (addon as NativeAddon).createContext({ threads: 1 });
    const { cache } = make();
    const k = new Float32Array(2 * s.Hkv * s.D);
    const store = (slots: number[], T = slots.length, kk: Float32Array = k) =>
      ctx.storeKV(cache.k, cache.v, cache.kvType, kk, kk, Int32Array.from(slots), T, s.Hkv, s.D, s.blockSize);
    store([0, 23]);
    assert.throws(() => store([0, 24]), /slot 24 of token 1 is outside the cache \(24 slots\)/);
    assert.throws(() => store([-1]), /slot -1 of token 0/);
    assert.throws(() => store([0], 2), /slots is too small/);
    assert.throws(() => store([0, 1, 2]), /k is too small/);
    assert.throws(() => store([0], 1, new Float64Array(32) as unknown as Float32Array), /k must be a Float32Array/);
  });
});
