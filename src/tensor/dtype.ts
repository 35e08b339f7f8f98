/**
 * Conversions between the 16-bit float formats checkpoints store and float32.
 *
 * bfloat16 is the top half of a float32, so widening is a 16-bit shift. IEEE half (f16) has a
 * 5-bit exponent and needs its exponent rebiased (with subnormals, infinities and NaN kept), on
 * the bits as well.
 */
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

export function bf16ToNumber(bits: number): number {
  u32[0] = bits << 16;
  return f32[0];
}

/** Round-to-nearest-even float32 -> bfloat16 bits (NaN stays NaN). */
export function numberToBf16(x: number): number {
  f32[0] = x;
  const b = u32[0];
  if ((b & 0x7fffffff) > 0x7f800000) return (b >>> 16) | 0x40;
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}

/** The float32 bit pattern of an IEEE half, exactly (every half is a float32), in integer arithmetic. */
function f16ToF32Bits(bits: number): number {
  const sign = (bits & 0x8000) << 16;
  const exponent = (bits >> 10) & 0x1f;
  const mantissa = bits & 0x3ff;
  // Rebias the exponent from 15 to 127; infinities and NaN (payload kept) go to exponent 255.
  if (exponent === 0x1f) return sign | 0x7f800000 | (mantissa << 13);
  if (exponent !== 0) return sign | ((exponent + 112) << 23) | (mantissa << 13);
  if (mantissa === 0) return sign;
  // A subnormal, mantissa × 2^-24, is normal in float32: shift its leading 1 up to the implicit bit.
  const shift = Math.clz32(mantissa) - 21;
  return sign | ((113 - shift) << 23) | (((mantissa << shift) & 0x3ff) << 13);
}

export function f16ToNumber(bits: number): number {
  u32[0] = f16ToF32Bits(bits);
  return f32[0];
}

/** Round-to-nearest-even float32 -> IEEE half bits, saturating to infinity. */
export function numberToF16(x: number): number {
  f32[0] = x;
  const b = u32[0];
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  let mant = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let h = mant >>> shift;
    const rest = mant & ((1 << shift) - 1);
    if (rest > half || (rest === half && h & 1)) h++;
    return sign | h;
  }
  let h = mant >>> 13;
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && h & 1)) {
    h++;
    if (h === 0x400) {
      h = 0;
      e++;
      if (e >= 0x1f) return sign | 0x7c00;
    }
  }
  return sign | (e << 10) | h;
}

export function bf16ToF32(bits: Uint16Array, out: Float32Array = new Float32Array(bits.length), outOffset = 0): Float32Array {
  const wide = new Uint32Array(out.buffer, out.byteOffset, out.length);
  for (let i = 0; i < bits.length; i++) wide[outOffset + i] = bits[i] << 16;
  return out;
}

/** Every half's float32 bits, and the same memory as values; made on first use (256 KB). */
let f16Table: { bits: Uint32Array; values: Float32Array } | undefined;

function f16Tables(): { bits: Uint32Array; values: Float32Array } {
  if (!f16Table) {
    const bits = new Uint32Array(65536);
    for (let h = 0; h < 65536; h++) bits[h] = f16ToF32Bits(h);
    f16Table = { bits, values: new Float32Array(bits.buffer) };
  }
  return f16Table;
}

/** Every half's value, indexed by its bits: a lookup is as fast as bf16's shift. */
export function f16Values(): Float32Array {
  return f16Tables().values;
}

export function f16ToF32(bits: Uint16Array, out: Float32Array = new Float32Array(bits.length), outOffset = 0): Float32Array {
  // Bits, not values, are copied, so NaN payloads survive.
  const table = f16Tables().bits;
  const wide = new Uint32Array(out.buffer, out.byteOffset, out.length);
  for (let i = 0; i < bits.length; i++) wide[outOffset + i] = table[bits[i]];
  return out;
}
