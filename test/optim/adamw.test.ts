// adamw.test.ts — the CPU AdamW step (cpp/cpu_adamw.cc; AVX2 loop in cpp/isa/adamw_avx2.cc) against a
// float64 reference of the same update: f32 parameters, and bf16 parameters with their f32 master
// copy, over three steps with weight decay, on every instruction set this CPU runs. Sizes cover the
// pool's chunking (above 8192 elements) and a vector tail (n not a multiple of 8).
import t from 'tap';
import * as L from '../../lib';
import { tensor } from '../../lib';
import { AdamW } from '../../lib/optim';
import { native } from '../../lib/native';
import { cpuIsas, f64, randArray, useCpuIsa } from '../helpers';

const usable = cpuIsas();
const H = { lr: 1e-2, b1: 0.9, b2: 0.999, eps: 1e-8, wd: 0.1 };

/** Three AdamW steps in float64 from weights w0 with gradients gs[step]. */
function reference(w0: Float64Array, gs: Float64Array[]): Float64Array {
  const w = Float64Array.from(w0);
  const m = new Float64Array(w.length);
  const v = new Float64Array(w.length);
  gs.forEach((g, s) => {
    const bc1 = 1 - H.b1 ** (s + 1);
    const bc2 = 1 - H.b2 ** (s + 1);
    for (let i = 0; i < w.length; i++) {
      w[i] -= H.lr * H.wd * w[i];
      m[i] = H.b1 * m[i] + (1 - H.b1) * g[i];
      v[i] = H.b2 * v[i] + (1 - H.b2) * g[i] * g[i];
      w[i] -= (H.lr * (m[i] / bc1)) / (Math.sqrt(v[i] / bc2) + H.eps);
    }
  });
  return w;
}

t.test('AdamW on the CPU: f32 and bf16 (f32 master) parameters against float64, every instruction set', async (tt) => {
  const before = native.cpuIsa().active;
  try {
    for (const n of [13, 20_011]) {
      const w0 = randArray(n, 3, -1, 1);
      const gs = [0, 1, 2].map((s) => randArray(n, 10 + s, -2, 2));
      for (const dtype of ['float32', 'bfloat16'] as const) {
        // Start and gradients as the dtype holds them, so the reference sees the same values.
        const w0d = f64(L.tidy(() => tensor(w0, { dtype })));
        const gsd = gs.map((g) => f64(L.tidy(() => tensor(g, { dtype }))));
        const want = reference(w0d, gsd);
        for (const isa of usable) {
          useCpuIsa(isa);
          const p = tensor(w0d, { dtype, requiresGrad: true });
          const opt = new AdamW([p], { lr: H.lr, betas: [H.b1, H.b2], eps: H.eps, weightDecay: H.wd });
          for (const g of gsd) {
            p.grad = tensor(g, { dtype });
            opt.stepUpdate();
            p.grad.dispose();
            p.grad = null;
          }
          const got = f64(p);
          // f32: a few roundings per step; bf16: the weights are the master rounded once to bf16.
          const [atol, rtol] = dtype === 'float32' ? [1e-7, 1e-6] : [1e-6, 2 ** -8 + 1e-6];
          let worst = 0;
          for (let i = 0; i < n; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]) / (atol + rtol * Math.abs(want[i])));
          tt.ok(worst <= 1, `${dtype} n ${n} [${isa}]: worst error ${worst.toFixed(3)} of the tolerance`);
          opt.dispose();
          p.dispose();
        }
      }
    }
  } finally {
    useCpuIsa(before);
  }
});
