import assert from "node:assert/strict";
import { test } from "node:test";
import { bf16ToF32, bf16ToNumber, f16ToF32, f16ToNumber, numberToBf16, numberToF16 } from "../src/tensor/dtype.js";

test("bf16 bit patterns decode to the values they encode", () => {
  assert.equal(bf16ToNumber(0x3f80), 1);
  assert.equal(bf16ToNumber(0xc000), -2);
  assert.equal(bf16ToNumber(0x3e80), 0.25);
  assert.equal(bf16ToNumber(0x7f80), Infinity);
  assert.ok(Number.isNaN(bf16ToNumber(0x7fc0)));
  assert.deepEqual(Array.from(bf16ToF32(Uint16Array.of(0x3f80, 0x4049))), [1, 3.140625]);
});

test("f16 bit patterns decode, including subnormals and infinities", () => {
  assert.equal(f16ToNumber(0x3c00), 1);
  assert.equal(f16ToNumber(0xc000), -2);
  assert.equal(f16ToNumber(0x7bff), 65504);
  assert.equal(f16ToNumber(0x0001), 2 ** -24);
  assert.equal(f16ToNumber(0x7c00), Infinity);
  assert.equal(f16ToNumber(0xfc00), -Infinity);
  assert.ok(Number.isNaN(f16ToNumber(0x7e00)));
  assert.deepEqual(Array.from(f16ToF32(Uint16Array.of(0x3555))), [0.333251953125]);
});

test("encoding rounds to nearest even and round-trips every finite 16-bit value", () => {
  assert.equal(numberToBf16(1 + 2 ** -8), 0x3f80); // halfway: ties to even (down)
  assert.equal(numberToBf16(1 + 3 * 2 ** -8), 0x3f82); // halfway: ties to even (up)
  assert.equal(numberToF16(1 + 2 ** -11), 0x3c00);
  assert.equal(numberToF16(70000), 0x7c00); // overflow saturates to infinity
  for (let bits = 0; bits < 0x10000; bits++) {
    const f = f16ToNumber(bits);
    if (Number.isFinite(f)) assert.equal(f16ToNumber(numberToF16(f)), f, `f16 ${bits.toString(16)}`);
    const b = bf16ToNumber(bits);
    if (Number.isFinite(b)) assert.equal(bf16ToNumber(numberToBf16(b)), b, `bf16 ${bits.toString(16)}`);
  }
});

/** IEEE half by the definition: (-1)^s × 2^(e-15) × 1.m, or 2^-14 × 0.m when e is 0. */
function referenceF16(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const mantissa = bits & 0x3ff;
  if (exponent === 0x1f) return mantissa ? NaN : sign * Infinity;
  if (exponent === 0) return sign * (mantissa / 1024) * 2 ** -14;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

test("every one of the 65536 f16 bit patterns decodes as the definition says: ±0, subnormals, normals, ±inf, NaN", () => {
  const all = Uint16Array.from({ length: 65536 }, (_, i) => i);
  const out = new Float32Array(65536 + 3);
  f16ToF32(all, out, 3);
  const outBits = new Uint32Array(out.buffer);
  let subnormals = 0;
  let nans = 0;
  for (let bits = 0; bits < 65536; bits++) {
    const want = referenceF16(bits);
    // Object.is tells -0 from 0 and takes NaN as equal to NaN.
    assert.ok(Object.is(f16ToNumber(bits), want), `f16ToNumber(0x${bits.toString(16)}) = ${f16ToNumber(bits)}, want ${want}`);
    assert.ok(Object.is(out[3 + bits], Math.fround(want)), `f16ToF32 at 0x${bits.toString(16)}: ${out[3 + bits]}, want ${want}`);
    if ((bits & 0x7c00) === 0 && (bits & 0x3ff) !== 0) subnormals++;
    if (Number.isNaN(want)) {
      nans++;
      // A NaN keeps its sign and payload: the half's 10 mantissa bits at the top of float32's 23.
      const expected = ((bits & 0x8000) << 16) | 0x7f800000 | ((bits & 0x3ff) << 13);
      assert.equal(outBits[3 + bits], expected >>> 0, `NaN 0x${bits.toString(16)}`);
    }
  }
  assert.deepEqual([subnormals, nans], [2046, 2046]);
  assert.deepEqual([out[0], out[1], out[2]], [0, 0, 0], "nothing is written before outOffset");
  assert.ok(Object.is(f16ToNumber(0x8000), -0));
  assert.equal(f16ToNumber(0x0001), 2 ** -24);
  assert.equal(f16ToNumber(0x03ff), 1023 * 2 ** -24);
  assert.equal(f16ToNumber(0x0400), 2 ** -14);
});

test("f16 rows widen about as fast as bf16 rows (a power of two per value was 10 to 40 times slower)", () => {
  const n = 1 << 20;
  const bits = Uint16Array.from({ length: n }, (_, i) => (i * 7919) & 0x7bff);
  const out = new Float32Array(n);
  const best = (fn: () => void): number => {
    let ms = Infinity;
    for (let run = 0; run < 7; run++) {
      const t = performance.now();
      fn();
      ms = Math.min(ms, performance.now() - t);
    }
    return ms;
  };
  const bf16 = best(() => bf16ToF32(bits, out));
  const f16 = best(() => f16ToF32(bits, out));
  assert.ok(f16 < 4 * bf16, `f16 ${f16.toFixed(2)} ms against bf16 ${bf16.toFixed(2)} ms for ${n} values`);
});
