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
