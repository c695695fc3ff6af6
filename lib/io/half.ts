// Half-precision <-> float32 conversions on raw bit patterns (Uint16Array holds the 16-bit words).
//
// - bf16 is the top half of an f32, so widening is a shift; narrowing rounds to nearest, ties to even,
//   exactly like torch's `.to(torch.bfloat16)`, so weights converted here match bf16 checkpoints bit for bit.
//   NaNs stay NaN (quiet bit forced, sign kept) instead of letting rounding carry them into infinity.
// - f16 widening goes through a 65536-entry table built on first use (256 KiB): every f16 value is exact
//   in f32, and a table lookup is the fastest pure-JS path for multi-million-element weights.
// - f16 narrowing is IEEE round-to-nearest-even with gradual underflow (subnormals) and overflow to
//   infinity from 65520 upward, as numpy/torch do.
// Both directions work on copies; inputs are never modified.

// One shared scratch word for scalar bit casts.
const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/** bf16 bit patterns -> float32 values. */
export function bf16ToF32(u16: Uint16Array): Float32Array {
  const out = new Uint32Array(u16.length);
  for (let i = 0; i < u16.length; i++) out[i] = u16[i] << 16;
  return new Float32Array(out.buffer);
}

/** One f32 bit pattern -> bf16 bits, round to nearest even. */
export function f32BitsToBf16(bits: number): number {
  bits >>>= 0;
  if ((bits & 0x7f800000) === 0x7f800000 && (bits & 0x007fffff) !== 0) {
    return ((bits >>> 16) | 0x0040) & 0xffff; // NaN: keep sign and payload top, force quiet
  }
  // Adding 0x7fff plus the lowest kept bit rounds half to even; the carry may legitimately overflow
  // into the exponent (largest finite values round up to infinity, as IEEE says).
  const rounded = bits + 0x7fff + ((bits >>> 16) & 1);
  return Math.floor(rounded / 65536) & 0xffff;
}

/** float32 values -> bf16 bit patterns (round to nearest, ties to even). */
export function f32ToBf16(f32: Float32Array | ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(f32.length);
  if (f32 instanceof Float32Array) {
    const bits = new Uint32Array(f32.buffer, f32.byteOffset, f32.length);
    for (let i = 0; i < bits.length; i++) out[i] = f32BitsToBf16(bits[i]);
  } else {
    for (let i = 0; i < f32.length; i++) {
      scratchF32[0] = f32[i];
      out[i] = f32BitsToBf16(scratchU32[0]);
    }
  }
  return out;
}

let f16Table: Float32Array | null = null;

function buildF16Table(): Float32Array {
  const table = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >>> 10) & 0x1f;
    const mant = h & 0x3ff;
    let v: number;
    if (exp === 0)
      v = mant * 2 ** -24; // zero and subnormals
    else if (exp === 0x1f) v = mant ? NaN : Infinity;
    else v = (1024 + mant) * 2 ** (exp - 25);
    table[h] = sign * v;
  }
  return table;
}

/** f16 bit patterns -> float32 values (exact). */
export function f16ToF32(u16: Uint16Array): Float32Array {
  const table = (f16Table ??= buildF16Table());
  const out = new Float32Array(u16.length);
  for (let i = 0; i < u16.length; i++) out[i] = table[u16[i]];
  return out;
}

/** One f32 bit pattern -> f16 bits, round to nearest even. */
export function f32BitsToF16(bits: number): number {
  bits >>>= 0;
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  let mant = bits & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0); // inf / quiet NaN
  const e = exp - 127 + 15; // rebiased exponent
  if (e >= 0x1f) return sign | 0x7c00; // overflow -> inf
  if (e <= 0) {
    // Subnormal (or zero) in f16: value = m * 2^-24 with m = (1.mant as a 24-bit integer) >> (14 - e).
    if (e < -10) return sign; // below half the smallest subnormal: rounds to +-0
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rem > halfway || (rem === halfway && half & 1)) half++; // may carry into the first normal: correct
    return sign | half;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++; // carry may reach 0x7c00 = inf: correct
  return sign | h;
}

/** float32 values -> f16 bit patterns (round to nearest, ties to even). */
export function f32ToF16(f32: Float32Array | ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(f32.length);
  if (f32 instanceof Float32Array) {
    const bits = new Uint32Array(f32.buffer, f32.byteOffset, f32.length);
    for (let i = 0; i < bits.length; i++) out[i] = f32BitsToF16(bits[i]);
  } else {
    for (let i = 0; i < f32.length; i++) {
      scratchF32[0] = f32[i];
      out[i] = f32BitsToF16(scratchU32[0]);
    }
  }
  return out;
}
