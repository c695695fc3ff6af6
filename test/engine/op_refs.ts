// op_refs.ts — the float64 references and helpers shared by the op table's files (test/engine/ops_*.test.ts):
// reductions, permutations and broadcasts of row-major arrays in plain JS, the f64 tolerance, and the leak
// check each of those files ends with. Not a test file itself (no `.test.` in the name).
import type { Test } from 'tap';
import * as L from '../../lib';
import type { Tensor } from '../../lib';
import { numel } from '../helpers';

/** f64 results must agree to ~1e-12: the kernels compute f64 in f64. */
export const F64_TOL = { atol: 1e-12, rtol: 1e-10 };

/** Reference reduction over `dims` of a row-major array; f receives the reduced values in order. */
export function refReduce(x: ArrayLike<number>, shape: number[], dims: number[], f: (v: number[]) => number): Float64Array {
  const nd = shape.length;
  const keep = shape.map((_, i) => i).filter((i) => !dims.includes(i));
  const outN = numel(keep.map((i) => shape[i]));
  const redN = numel(dims.map((i) => shape[i]));
  const strides = shape.map((_, i) => numel(shape.slice(i + 1)));
  const out = new Float64Array(outN);
  for (let o = 0; o < outN; o++) {
    let base = 0;
    let rem = o;
    for (let k = keep.length - 1; k >= 0; k--) {
      const d = keep[k];
      base += (rem % shape[d]) * strides[d];
      rem = Math.floor(rem / shape[d]);
    }
    const vals: number[] = [];
    for (let r = 0; r < redN; r++) {
      let off = base;
      let rr = r;
      for (let k = dims.length - 1; k >= 0; k--) {
        const d = dims[k];
        off += (rr % shape[d]) * strides[d];
        rr = Math.floor(rr / shape[d]);
      }
      vals.push(x[off]);
    }
    out[o] = f(vals);
  }
  void nd;
  return out;
}

/** Row-major permutation of an array with `shape` by `perm` (out dim i = in dim perm[i]). */
export function refPermute(x: ArrayLike<number>, shape: number[], perm: number[]): Float64Array {
  const outShape = perm.map((p) => shape[p]);
  const inStr = shape.map((_, i) => numel(shape.slice(i + 1)));
  const n = numel(shape);
  const out = new Float64Array(n);
  for (let o = 0; o < n; o++) {
    let rem = o;
    let off = 0;
    for (let k = outShape.length - 1; k >= 0; k--) {
      off += (rem % outShape[k]) * inStr[perm[k]];
      rem = Math.floor(rem / outShape[k]);
    }
    out[o] = x[off];
  }
  return out;
}

/** Broadcast a row-major array of `shape` to `target`. */
export function refBroadcast(x: ArrayLike<number>, shape: number[], target: number[]): Float64Array {
  const n = numel(target);
  const lead = target.length - shape.length;
  const inStr = shape.map((_, i) => numel(shape.slice(i + 1)));
  const out = new Float64Array(n);
  for (let o = 0; o < n; o++) {
    let rem = o;
    let off = 0;
    for (let k = target.length - 1; k >= 0; k--) {
      const c = rem % target[k];
      rem = Math.floor(rem / target[k]);
      const j = k - lead;
      if (j >= 0 && shape[j] !== 1) off += c * inStr[j];
    }
    out[o] = x[off];
  }
  return out;
}

export function toNum(x: Tensor): number[] {
  return x.toNumbers();
}

/** The last test of every ops_*.test.ts: every test before it ran in tidy, so no tensor or storage is left. */
export function leaveNoTensorsBehind(t: Test): void {
  t.test('ops leave no tensors behind', async (t) => {
    const before = L.memory();
    // every test above ran in tidy: nothing outlives them
    t.equal(before.numTensors, 0, 'no live tensors after the suite');
    t.equal(before.cpu.storages, 0, 'no live storages after the suite');
  });
}
