/**
 * Keys and values of the tokens seen so far, for one layer, so that decoding a new token costs
 * one token's work instead of re-running the whole sequence. Storage grows in chunks along S.
 */
import { copyInto } from "../tensor/ops.js";
import { Tensor } from "../tensor/tensor.js";

const CHUNK = 256;

export class KVCache {
  private keys?: Tensor;
  private values?: Tensor;
  /** Number of positions stored (the position of the next token). */
  offset = 0;

  /** Appends k, v ([B, H_kv, L, D]) and returns all keys and values so far ([B, H_kv, S, D]). */
  update(k: Tensor, v: Tensor): { keys: Tensor; values: Tensor } {
    const [B, Hkv, L, D] = k.shape;
    const need = this.offset + L;
    if (!this.keys || !this.values || need > this.keys.shape[2]) {
      const capacity = Math.ceil(need / CHUNK) * CHUNK;
      const grownK = Tensor.zeros([B, Hkv, capacity, D]);
      const grownV = Tensor.zeros([B, Hkv, capacity, D]);
      if (this.keys && this.values && this.offset > 0) {
        copyInto(grownK.slice(2, 0, this.offset), this.keys.slice(2, 0, this.offset));
        copyInto(grownV.slice(2, 0, this.offset), this.values.slice(2, 0, this.offset));
      }
      this.keys = grownK;
      this.values = grownV;
    }
    copyInto(this.keys.slice(2, this.offset, need), k);
    copyInto(this.values.slice(2, this.offset, need), v);
    this.offset = need;
    return { keys: this.keys.slice(2, 0, need), values: this.values.slice(2, 0, need) };
  }
}
