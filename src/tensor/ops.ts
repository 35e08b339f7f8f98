/**
 * Operations on tensors: elementwise math with NumPy broadcasting, batched matmul, softmax,
 * reductions, concat and row gather. Plain loops, written to be read; accumulations use JS
 * numbers (float64) so the reference is more precise than the float32 it stores.
 */
import { Tensor, sizeOf, type Shape } from "./tensor.js";

export function broadcastShapes(a: Shape, b: Shape): number[] {
  const n = Math.max(a.length, b.length);
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    const da = a[a.length - n + i] ?? 1;
    const db = b[b.length - n + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) throw new RangeError(`shapes [${a}] and [${b}] do not broadcast`);
    out[i] = da === 1 ? db : da;
  }
  return out;
}

/** Visits every index of `shape` in row-major order with the storage offsets of two same-shaped views. */
function forEachPair(x: Tensor, y: Tensor, fn: (ox: number, oy: number, i: number) => void): void {
  const shape = x.shape;
  const n = sizeOf(shape);
  if (n === 0) return;
  const nd = shape.length;
  if (nd === 0) {
    fn(x.offset, y.offset, 0);
    return;
  }
  const idx = new Array<number>(nd).fill(0);
  const last = nd - 1;
  let bx = x.offset;
  let by = y.offset;
  for (let i = 0; i < n;) {
    let ox = bx;
    let oy = by;
    for (let k = 0; k < shape[last]; k++, i++, ox += x.strides[last], oy += y.strides[last]) fn(ox, oy, i);
    let ax = last - 1;
    while (ax >= 0) {
      idx[ax]++;
      bx += x.strides[ax];
      by += y.strides[ax];
      if (idx[ax] < shape[ax]) break;
      bx -= idx[ax] * x.strides[ax];
      by -= idx[ax] * y.strides[ax];
      idx[ax] = 0;
      ax--;
    }
  }
}

function binary(a: Tensor, b: Tensor, f: (x: number, y: number) => number): Tensor {
  const shape = broadcastShapes(a.shape, b.shape);
  const out = new Float32Array(sizeOf(shape));
  const av = a.broadcastTo(shape);
  const bv = b.broadcastTo(shape);
  const ad = a.data;
  const bd = b.data;
  forEachPair(av, bv, (oa, ob, i) => {
    out[i] = f(ad[oa], bd[ob]);
  });
  return new Tensor(out, shape);
}

const asTensor = (x: Tensor | number): Tensor => (typeof x === "number" ? Tensor.scalar(x) : x);

export const add = (a: Tensor, b: Tensor | number): Tensor => binary(a, asTensor(b), (x, y) => x + y);
export const sub = (a: Tensor, b: Tensor | number): Tensor => binary(a, asTensor(b), (x, y) => x - y);
export const mul = (a: Tensor, b: Tensor | number): Tensor => binary(a, asTensor(b), (x, y) => x * y);
export const div = (a: Tensor, b: Tensor | number): Tensor => binary(a, asTensor(b), (x, y) => x / y);

export function map(a: Tensor, f: (x: number) => number): Tensor {
  const out = new Float32Array(a.size);
  const d = a.data;
  a.forEachOffset((o, i) => {
    out[i] = f(d[o]);
  });
  return new Tensor(out, a.shape);
}

export const exp = (a: Tensor): Tensor => map(a, Math.exp);
export const sigmoid = (a: Tensor): Tensor => map(a, (x) => 1 / (1 + Math.exp(-x)));
/** SiLU (swish): x · σ(x). */
export const silu = (a: Tensor): Tensor => map(a, (x) => x / (1 + Math.exp(-x)));

/**
 * Batched matrix product [..., M, K] @ [..., K, N] -> [..., M, N]. Leading (batch) axes
 * broadcast, so a [B, H_kv, 1, S, D] operand can serve G query heads without being copied.
 */
export function matmul(a: Tensor, b: Tensor): Tensor {
  if (a.ndim < 2 || b.ndim < 2) throw new RangeError(`matmul needs 2-d or higher operands, got [${a.shape}] and [${b.shape}]`);
  const [M, K] = a.shape.slice(-2);
  const [K2, N] = b.shape.slice(-2);
  if (K !== K2) throw new RangeError(`matmul inner sizes differ: [${a.shape}] @ [${b.shape}]`);
  const batch = broadcastShapes(a.shape.slice(0, -2), b.shape.slice(0, -2));
  const av = a.broadcastTo([...batch, M, K]);
  const bv = b.broadcastTo([...batch, K, N]);
  const out = new Float32Array(sizeOf(batch) * M * N);
  const ad = a.data;
  const bd = b.data;
  const [am, ak] = av.strides.slice(-2);
  const [bk, bn] = bv.strides.slice(-2);
  // Walk the batch axes with a zero-size trailing pair so forEachPair yields matrix origins.
  const aOrigins = new Tensor(ad, [...batch], av.strides.slice(0, -2), av.offset);
  const bOrigins = new Tensor(bd, [...batch], bv.strides.slice(0, -2), bv.offset);
  forEachPair(aOrigins, bOrigins, (a0, b0, batchIndex) => {
    const o0 = batchIndex * M * N;
    for (let m = 0; m < M; m++) {
      const aRow = a0 + m * am;
      for (let n = 0; n < N; n++) {
        let acc = 0;
        let pa = aRow;
        let pb = b0 + n * bn;
        for (let k = 0; k < K; k++, pa += ak, pb += bk) acc += ad[pa] * bd[pb];
        out[o0 + m * N + n] = acc;
      }
    }
  });
  return new Tensor(out, [...batch, M, N]);
}

/** Applies fn to each 1-d lane along `axis`, writing a lane of the same length. */
function mapLanes(
  a: Tensor,
  axis: number,
  fn: (src: Float32Array, srcOffset: number, srcStride: number, dst: Float32Array, dstOffset: number, dstStride: number, n: number) => void,
): Tensor {
  const ax = axis < 0 ? axis + a.ndim : axis;
  const moved = a.transpose(ax, -1).contiguous();
  const n = moved.dim(-1);
  const out = new Float32Array(moved.size);
  for (let lane = 0; lane * n < moved.size; lane++) fn(moved.data, moved.offset + lane * n, 1, out, lane * n, 1, n);
  return new Tensor(out, moved.shape).transpose(ax, -1).contiguous();
}

/** Numerically stable softmax: subtract the lane maximum before exponentiating. */
export function softmax(a: Tensor, axis = -1): Tensor {
  return mapLanes(a, axis, (src, so, ss, dst, d0, ds, n) => {
    let max = -Infinity;
    for (let i = 0; i < n; i++) max = Math.max(max, src[so + i * ss]);
    if (max === -Infinity) {
      // A fully masked lane has no defined distribution; zeros keep it from poisoning later sums.
      for (let i = 0; i < n; i++) dst[d0 + i * ds] = 0;
      return;
    }
    let sum = 0;
    for (let i = 0; i < n; i++) sum += Math.exp(src[so + i * ss] - max);
    for (let i = 0; i < n; i++) dst[d0 + i * ds] = Math.exp(src[so + i * ss] - max) / sum;
  });
}

/** log-softmax, for log-probabilities: x - logsumexp(x). */
export function logSoftmax(a: Tensor, axis = -1): Tensor {
  return mapLanes(a, axis, (src, so, ss, dst, d0, ds, n) => {
    let max = -Infinity;
    for (let i = 0; i < n; i++) max = Math.max(max, src[so + i * ss]);
    let sum = 0;
    for (let i = 0; i < n; i++) sum += Math.exp(src[so + i * ss] - max);
    const lse = max + Math.log(sum);
    for (let i = 0; i < n; i++) dst[d0 + i * ds] = src[so + i * ss] - lse;
  });
}

type Reducer = (values: Float32Array, offset: number, n: number) => number;

function reduce(a: Tensor, axis: number, keepDims: boolean, fn: Reducer): Tensor {
  const ax = axis < 0 ? axis + a.ndim : axis;
  if (ax < 0 || ax >= a.ndim) throw new RangeError(`axis ${axis} out of range for [${a.shape}]`);
  const moved = a.transpose(ax, -1).contiguous();
  const n = moved.dim(-1);
  const lanes = n === 0 ? 0 : moved.size / n;
  const out = new Float32Array(lanes);
  for (let lane = 0; lane < lanes; lane++) out[lane] = fn(moved.data, moved.offset + lane * n, n);
  // The reduced axis sits last in `moved`; put a size-1 axis back where it was.
  const lead = moved.shape.slice(0, -1);
  const reduced = new Tensor(out, [...lead, 1]).transpose(ax, -1).contiguous();
  if (keepDims) return reduced;
  return reduced.reshape(a.shape.filter((_, i) => i !== ax));
}

export const sum = (a: Tensor, axis = -1, keepDims = false): Tensor =>
  reduce(a, axis, keepDims, (v, o, n) => {
    let s = 0;
    for (let i = 0; i < n; i++) s += v[o + i];
    return s;
  });

export const mean = (a: Tensor, axis = -1, keepDims = false): Tensor =>
  reduce(a, axis, keepDims, (v, o, n) => {
    let s = 0;
    for (let i = 0; i < n; i++) s += v[o + i];
    return s / n;
  });

export const max = (a: Tensor, axis = -1, keepDims = false): Tensor =>
  reduce(a, axis, keepDims, (v, o, n) => {
    let m = -Infinity;
    for (let i = 0; i < n; i++) m = Math.max(m, v[o + i]);
    return m;
  });

/** Index of the largest value along `axis` (the first one on ties). */
export const argmax = (a: Tensor, axis = -1, keepDims = false): Tensor => reduce(a, axis, keepDims, (v, o, n) => argmaxOf(v, o, n));

export function argmaxOf(v: ArrayLike<number>, offset = 0, n = v.length - offset): number {
  let best = 0;
  for (let i = 1; i < n; i++) if (v[offset + i] > v[offset + best]) best = i;
  return best;
}

export function concat(tensors: readonly Tensor[], axis: number): Tensor {
  if (tensors.length === 0) throw new RangeError("concat needs at least one tensor");
  const first = tensors[0];
  const ax = axis < 0 ? axis + first.ndim : axis;
  for (const t of tensors) {
    if (t.ndim !== first.ndim || t.shape.some((d, i) => i !== ax && d !== first.shape[i])) {
      throw new RangeError(`concat along axis ${axis}: shapes [${first.shape}] and [${t.shape}] differ off that axis`);
    }
  }
  const shape = [...first.shape];
  shape[ax] = tensors.reduce((s, t) => s + t.shape[ax], 0);
  const out = Tensor.zeros(shape);
  let at = 0;
  for (const t of tensors) {
    copyInto(out.slice(ax, at, at + t.shape[ax]), t);
    at += t.shape[ax];
  }
  return out;
}

/** Writes src's elements into the (same-shaped) view dst. */
export function copyInto(dst: Tensor, src: Tensor): void {
  if (dst.shape.length !== src.shape.length || dst.shape.some((d, i) => d !== src.shape[i])) {
    throw new RangeError(`copy: shapes [${src.shape}] and [${dst.shape}] differ`);
  }
  const dd = dst.data;
  const sd = src.data;
  forEachPair(dst, src, (od, os) => {
    dd[od] = sd[os];
  });
}

/** Rows of a 2-d [N, C] tensor picked by index: out[i] = table[ids[i]]. */
export function gatherRows(table: Tensor, ids: readonly number[]): Tensor {
  if (table.ndim !== 2) throw new RangeError(`gatherRows needs a 2-d table, got [${table.shape}]`);
  const [n, c] = table.shape;
  const rows = ids.map((id) => {
    if (!Number.isInteger(id) || id < 0 || id >= n) throw new RangeError(`row ${id} out of range for a table of ${n} rows`);
    return table.slice(0, id, id + 1);
  });
  return rows.length === 0 ? Tensor.zeros([0, c]) : concat(rows, 0);
}
