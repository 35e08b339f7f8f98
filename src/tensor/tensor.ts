/**
 * A small n-dimensional array: float32 storage plus a shape, strides and an offset.
 *
 * Views (reshape of a contiguous tensor, transpose, permute, slice, broadcast) share the
 * storage; `contiguous()` copies only when the layout requires it. Everything the model needs
 * is built from this and the ops in `ops.ts`.
 *
 * Dimension names used across the code base (in shape comments and variable names):
 *   B   batch                    L   query length (tokens in this forward pass)
 *   S   key/value length         H   query heads
 *   H_kv key/value heads         G   query heads per key/value head (H / H_kv)
 *   D   head dim                 E   hidden size (embedding width)
 *   I   MLP intermediate size    V   vocabulary size
 */
export type Shape = readonly number[];

export function sizeOf(shape: Shape): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function contiguousStrides(shape: Shape): number[] {
  const strides = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = s;
    s *= shape[i];
  }
  return strides;
}

function normAxis(axis: number, ndim: number): number {
  const a = axis < 0 ? axis + ndim : axis;
  if (a < 0 || a >= ndim) throw new RangeError(`axis ${axis} out of range for ${ndim}-d tensor`);
  return a;
}

export class Tensor {
  readonly data: Float32Array;
  readonly shape: readonly number[];
  readonly strides: readonly number[];
  readonly offset: number;

  constructor(data: Float32Array, shape: Shape, strides?: readonly number[], offset = 0) {
    if (shape.some((d) => !Number.isInteger(d) || d < 0)) throw new RangeError(`invalid shape [${shape}]`);
    this.data = data;
    this.shape = [...shape];
    this.strides = strides ? [...strides] : contiguousStrides(shape);
    this.offset = offset;
    if (!strides && offset + sizeOf(shape) > data.length) {
      throw new RangeError(`shape [${shape}] needs ${sizeOf(shape)} elements, storage has ${data.length - offset}`);
    }
  }

  static zeros(shape: Shape): Tensor {
    return new Tensor(new Float32Array(sizeOf(shape)), shape);
  }

  static full(shape: Shape, value: number): Tensor {
    return new Tensor(new Float32Array(sizeOf(shape)).fill(value), shape);
  }

  /** From a flat list (row-major) or nested arrays; the shape is inferred from nesting if omitted. */
  static from(values: ArrayLike<number> | NestedArray, shape?: Shape): Tensor {
    if (isNested(values)) {
      const inferred = inferShape(values);
      const flat = new Float32Array(sizeOf(inferred));
      flatten(values, flat, 0);
      return new Tensor(flat, shape ?? inferred);
    }
    const data = Float32Array.from(values);
    return new Tensor(data, shape ?? [data.length]);
  }

  static scalar(value: number): Tensor {
    return new Tensor(Float32Array.of(value), []);
  }

  get ndim(): number {
    return this.shape.length;
  }

  get size(): number {
    return sizeOf(this.shape);
  }

  dim(axis: number): number {
    return this.shape[normAxis(axis, this.ndim)];
  }

  isContiguous(): boolean {
    const expected = contiguousStrides(this.shape);
    return this.shape.every((d, i) => d === 1 || this.strides[i] === expected[i]);
  }

  /** The elements in row-major order, as a fresh or shared contiguous tensor. */
  contiguous(): Tensor {
    if (this.isContiguous()) return new Tensor(this.data, this.shape, contiguousStrides(this.shape), this.offset);
    const out = new Float32Array(this.size);
    this.forEachOffset((src, i) => {
      out[i] = this.data[src];
    });
    return new Tensor(out, this.shape);
  }

  /** The contiguous elements as a Float32Array view (copied first if the layout needs it). */
  toFloat32Array(): Float32Array {
    const c = this.contiguous();
    return c.data.subarray(c.offset, c.offset + c.size);
  }

  toArray(): number[] {
    return Array.from(this.toFloat32Array());
  }

  item(): number {
    if (this.size !== 1) throw new RangeError(`item() needs a single element, shape is [${this.shape}]`);
    return this.data[this.offset];
  }

  get(...index: number[]): number {
    if (index.length !== this.ndim) throw new RangeError(`expected ${this.ndim} indices, got ${index.length}`);
    let o = this.offset;
    for (let i = 0; i < index.length; i++) {
      const k = index[i] < 0 ? index[i] + this.shape[i] : index[i];
      if (k < 0 || k >= this.shape[i]) throw new RangeError(`index ${index[i]} out of range for axis ${i} of size ${this.shape[i]}`);
      o += k * this.strides[i];
    }
    return this.data[o];
  }

  /** Same elements, new shape; one dimension may be -1. A view when the tensor is contiguous. */
  reshape(shape: Shape): Tensor {
    const newShape = [...shape];
    const unknown = newShape.indexOf(-1);
    if (unknown >= 0) {
      const known = newShape.reduce((p, d, i) => (i === unknown ? p : p * d), 1);
      newShape[unknown] = known === 0 ? 0 : this.size / known;
    }
    if (sizeOf(newShape) !== this.size || !newShape.every(Number.isInteger)) {
      throw new RangeError(`cannot reshape [${this.shape}] (${this.size} elements) to [${shape}]`);
    }
    const c = this.contiguous();
    return new Tensor(c.data, newShape, contiguousStrides(newShape), c.offset);
  }

  permute(axes: readonly number[]): Tensor {
    if (axes.length !== this.ndim) throw new RangeError(`permute needs ${this.ndim} axes, got ${axes.length}`);
    const norm = axes.map((a) => normAxis(a, this.ndim));
    if (new Set(norm).size !== norm.length) throw new RangeError(`permute axes repeat: [${axes}]`);
    return new Tensor(
      this.data,
      norm.map((a) => this.shape[a]),
      norm.map((a) => this.strides[a]),
      this.offset,
    );
  }

  transpose(a = -2, b = -1): Tensor {
    const axes = [...this.shape.keys()];
    const i = normAxis(a, this.ndim);
    const j = normAxis(b, this.ndim);
    [axes[i], axes[j]] = [axes[j], axes[i]];
    return this.permute(axes);
  }

  /** Elements start..end-1 along `axis` (a view). */
  slice(axis: number, start: number, end: number = this.dim(axis)): Tensor {
    const a = normAxis(axis, this.ndim);
    if (start < 0 || end > this.shape[a] || start > end) {
      throw new RangeError(`slice ${start}:${end} out of range for axis ${axis} of size ${this.shape[a]}`);
    }
    const shape = [...this.shape];
    shape[a] = end - start;
    return new Tensor(this.data, shape, this.strides, this.offset + start * this.strides[a]);
  }

  /** Insert a size-1 axis. */
  expandDims(axis: number): Tensor {
    const a = axis < 0 ? axis + this.ndim + 1 : axis;
    const shape = [...this.shape];
    const strides = [...this.strides];
    shape.splice(a, 0, 1);
    strides.splice(a, 0, 0);
    return new Tensor(this.data, shape, strides, this.offset);
  }

  /** A view with NumPy broadcasting to `shape`: repeated axes get stride 0, nothing is copied. */
  broadcastTo(shape: Shape): Tensor {
    if (shape.length < this.ndim) throw new RangeError(`cannot broadcast [${this.shape}] to [${shape}]`);
    const lead = shape.length - this.ndim;
    const strides = shape.map((d, i) => {
      if (i < lead) return 0;
      const own = this.shape[i - lead];
      if (own === d) return this.strides[i - lead];
      if (own === 1) return 0;
      throw new RangeError(`cannot broadcast [${this.shape}] to [${shape}]`);
    });
    return new Tensor(this.data, shape, strides, this.offset);
  }

  /** Calls fn(storageOffset, rowMajorIndex) for every element, in row-major order. */
  forEachOffset(fn: (offset: number, index: number) => void): void {
    const n = this.size;
    if (n === 0) return;
    const nd = this.ndim;
    if (nd === 0) {
      fn(this.offset, 0);
      return;
    }
    const idx = new Array<number>(nd).fill(0);
    const last = nd - 1;
    const lastDim = this.shape[last];
    const lastStride = this.strides[last];
    let base = this.offset;
    for (let i = 0; i < n;) {
      let o = base;
      for (let k = 0; k < lastDim; k++, i++, o += lastStride) fn(o, i);
      // Carry into the outer axes.
      let ax = last - 1;
      while (ax >= 0) {
        idx[ax]++;
        base += this.strides[ax];
        if (idx[ax] < this.shape[ax]) break;
        base -= idx[ax] * this.strides[ax];
        idx[ax] = 0;
        ax--;
      }
    }
  }
}

export type NestedArray = readonly (number | NestedArray)[];

function isNested(v: ArrayLike<number> | NestedArray): v is NestedArray {
  return Array.isArray(v) && v.length > 0 && Array.isArray(v[0]);
}

function inferShape(v: NestedArray): number[] {
  const shape: number[] = [];
  let cur: number | NestedArray = v;
  while (Array.isArray(cur)) {
    shape.push(cur.length);
    cur = (cur as NestedArray)[0];
  }
  return shape;
}

function flatten(v: NestedArray, out: Float32Array, at: number): number {
  for (const x of v) {
    if (Array.isArray(x)) at = flatten(x, out, at);
    else out[at++] = x as number;
  }
  return at;
}
