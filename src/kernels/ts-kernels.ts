/**
 * The kernel interface in plain TypeScript: what runs where the native addon did not build, and
 * the oracle each native kernel is tested against. Sums are accumulated in float64 and every
 * row is computed on its own, so a row's result never depends on the other rows of its batch.
 */
import { bf16ToNumber, f16Values, numberToBf16, numberToF16 } from "../tensor/dtype.js";
import type { WeightMatrix } from "../tensor/weight.js";
import { SEQ_FIELDS, type Kernels, type KvArray, type KvDtype } from "./kernels.js";

/** A cache array's values as f32 (a view for f32, a decoded copy for 16-bit types). */
function kvValues(cache: KvArray, dtype: KvDtype, from: number, n: number, out: Float32Array): Float32Array {
  if (dtype === "f32") return (cache as Float32Array).subarray(from, from + n);
  if (dtype === "f16") {
    // Attention reads f16 keys and values by lookup.
    const table = f16Values();
    for (let i = 0; i < n; i++) out[i] = table[cache[from + i]];
  } else {
    for (let i = 0; i < n; i++) out[i] = bf16ToNumber(cache[from + i]);
  }
  return out.subarray(0, n);
}

function silu(x: number): number {
  return x / (1 + Math.exp(-x));
}

export class TsKernels implements Kernels<WeightMatrix> {
  readonly name = "ts";
  private row = new Float32Array(0);

  prepare(w: WeightMatrix): WeightMatrix {
    return w;
  }

  matmul(out: Float32Array, x: Float32Array, M: number, w: WeightMatrix, bias: Float32Array | null): void {
    const { rows: N, cols: K } = w;
    if (this.row.length < K) this.row = new Float32Array(K);
    const row = this.row;
    // One decoded weight row serves every row of x: each weight is read once per call.
    for (let n = 0; n < N; n++) {
      w.decodeRow(n, row);
      const b = bias ? bias[n] : 0;
      for (let m = 0; m < M; m++) {
        let acc = 0;
        const x0 = m * K;
        for (let k = 0; k < K; k++) acc += x[x0 + k] * row[k];
        out[m * N + n] = acc + b;
      }
    }
  }

  matmulMany(
    x: Float32Array,
    M: number,
    outs: readonly Float32Array[],
    ws: readonly WeightMatrix[],
    biases: readonly (Float32Array | null)[],
  ): void {
    ws.forEach((w, i) => this.matmul(outs[i], x, M, w, biases[i]));
  }

  swiglu(
    out: Float32Array,
    x: Float32Array,
    M: number,
    gate: WeightMatrix,
    gateBias: Float32Array | null,
    up: WeightMatrix,
    upBias: Float32Array | null,
  ): void {
    const u = new Float32Array(M * up.rows);
    this.matmul(out, x, M, gate, gateBias);
    this.matmul(u, x, M, up, upBias);
    for (let i = 0; i < M * gate.rows; i++) out[i] = silu(out[i]) * u[i];
  }

  rmsNorm(out: Float32Array, x: Float32Array, weight: Float32Array, rows: number, n: number, eps: number): void {
    for (let o = 0; o < rows * n; o += n) {
      let ss = 0;
      for (let i = 0; i < n; i++) ss += x[o + i] * x[o + i];
      const inv = 1 / Math.sqrt(ss / n + eps);
      for (let i = 0; i < n; i++) out[o + i] = x[o + i] * inv * weight[i];
    }
  }

  rope(x: Float32Array, T: number, heads: number, D: number, positions: Int32Array, theta: number, traditional: boolean): void {
    const half = D / 2;
    for (let t = 0; t < T; t++) {
      const pos = positions[t];
      for (let i = 0; i < half; i++) {
        const angle = pos * theta ** (-(2 * i) / D);
        const cos = Math.cos(angle);
        const sin = Math.sin(angle);
        for (let h = 0; h < heads; h++) {
          const o = (t * heads + h) * D;
          const a = traditional ? o + 2 * i : o + i;
          const b = traditional ? a + 1 : a + half;
          const x0 = x[a];
          const x1 = x[b];
          x[a] = x0 * cos - x1 * sin;
          x[b] = x1 * cos + x0 * sin;
        }
      }
    }
  }

  storeKV(
    kCache: KvArray,
    vCache: KvArray,
    dtype: KvDtype,
    k: Float32Array,
    v: Float32Array,
    slots: Int32Array,
    T: number,
    Hkv: number,
    D: number,
    blockSize: number,
  ): void {
    const encode = dtype === "f32" ? (x: number) => x : dtype === "f16" ? numberToF16 : numberToBf16;
    for (let t = 0; t < T; t++) {
      const block = Math.floor(slots[t] / blockSize);
      const offset = slots[t] % blockSize;
      for (let h = 0; h < Hkv; h++) {
        const src = (t * Hkv + h) * D;
        const dst = ((block * Hkv + h) * blockSize + offset) * D;
        for (let d = 0; d < D; d++) {
          kCache[dst + d] = encode(k[src + d]);
          vCache[dst + d] = encode(v[src + d]);
        }
      }
    }
  }

  pagedAttention(
    out: Float32Array,
    q: Float32Array,
    kCache: KvArray,
    vCache: KvArray,
    dtype: KvDtype,
    seqs: Int32Array,
    blockTables: Int32Array,
    H: number,
    Hkv: number,
    D: number,
    blockSize: number,
    scale: number,
  ): void {
    const G = H / Hkv;
    const kRow = new Float32Array(D);
    const vRow = new Float32Array(D);
    const acc = new Float64Array(D);
    for (let s = 0; s < seqs.length; s += SEQ_FIELDS) {
      const [qStart, qLen, kvLen, tableStart] = seqs.subarray(s, s + SEQ_FIELDS);
      const scores = new Float64Array(kvLen);
      const at = (p: number, h: number): number =>
        ((blockTables[tableStart + Math.floor(p / blockSize)] * Hkv + h) * blockSize + (p % blockSize)) * D;
      for (let i = 0; i < qLen; i++) {
        const last = kvLen - qLen + i;
        for (let h = 0; h < H; h++) {
          const kvh = Math.floor(h / G);
          const qo = ((qStart + i) * H + h) * D;
          let max = -Infinity;
          for (let p = 0; p <= last; p++) {
            const kp = kvValues(kCache, dtype, at(p, kvh), D, kRow);
            let dot = 0;
            for (let d = 0; d < D; d++) dot += q[qo + d] * kp[d];
            scores[p] = dot * scale;
            if (scores[p] > max) max = scores[p];
          }
          let sum = 0;
          acc.fill(0);
          for (let p = 0; p <= last; p++) {
            const e = Math.exp(scores[p] - max);
            sum += e;
            const vp = kvValues(vCache, dtype, at(p, kvh), D, vRow);
            for (let d = 0; d < D; d++) acc[d] += e * vp[d];
          }
          for (let d = 0; d < D; d++) out[qo + d] = acc[d] / sum;
        }
      }
    }
  }

  releaseScratch(): void {}

  info(): { isa: string; threads: number } {
    return { isa: "typescript", threads: 1 };
  }
}
