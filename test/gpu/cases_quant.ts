// cases_quant.ts — device parity cases for weight-only quantization (cpp/cpu_quant.cc / cuda/quant.cu) and
// the LoRA linear over dense and quantized weights (lib/ops/lora.ts): the codes and scales `quantize` writes
// must be identical on both devices (the same float divisions and midpoint tests), `dequantize` exact,
// `quant_matmul` (GEMV, M <= 8) and the dequantize + GEMM path (M > 8) plain parity, with their input
// gradients; a weight size whose NF4 blocks straddle rows (K 150) and an odd element count.
import * as L from '../../lib';
import { Input, Outputs, ParityCase, Tol, f64, forwardBackward, inp, noGradInp, parity, upload } from './parity';

const EXACT: Tol = { atol: 0, rtol: 0, atolRms: 0 };

function quantizeOutputs(dev: L.Device, w: Input, fmt: L.QuantFormat): Outputs {
  return L.tidy(() => {
    const q = L.QuantizedWeight.quantize(upload(w, dev), fmt);
    try {
      const d = q.dequantize();
      return { codes: f64(q.codes), scales: f64(q.scales), dequantized: f64(d) };
    } finally {
      q.dispose();
    }
  });
}

export function quantCases(): ParityCase[] {
  const out: ParityCase[] = [];
  for (const fmt of ['int8', 'nf4'] as L.QuantFormat[]) {
    for (const dt of ['float32', 'bfloat16'] as L.DType[]) {
      const w = noGradInp(inp([37, 150], dt, 4100, -1, 1));
      out.push(parity('quant', `quantize+dequantize ${fmt} from ${dt} [37,150]`, dt, (dev) => quantizeOutputs(dev, w, fmt), EXACT));
      for (const M of [1, 5, 24]) {
        const x = inp([M, 150], dt, 4101 + M);
        const b = inp([37], dt, 4102);
        out.push(
          parity('quant', `quantLinear ${fmt} ${dt} M=${M} fwd+bwd (${M <= L.QUANT_GEMV_ROWS ? 'GEMV' : 'dequantize + GEMM'})`, dt, (dev) => {
            const q = L.tidy(() => L.QuantizedWeight.quantize(upload(w, dev), fmt));
            try {
              return forwardBackward(dev, [x, b], (xt, bt) => L.quantLinear(xt, q, bt));
            } finally {
              q.dispose();
            }
          }),
        );
      }
    }
  }
  for (const dt of ['float32', 'bfloat16'] as L.DType[]) {
    const x = inp([2, 9, 64], dt, 4200);
    const w = noGradInp(inp([40, 64], dt, 4201));
    const A = inp([8, 64], dt, 4202);
    const B = inp([40, 8], dt, 4203);
    out.push(
      parity('quant', `loraLinear dense ${dt} [2,9,64] r 8 dropout 0.1 fwd+bwd`, dt, (dev) =>
        forwardBackward(dev, [x, w, A, B], (xt, wt, at, bt) =>
          L.loraLinear(xt, wt, null, at, bt, { scale: 2, dropout: 0.1, generator: new L.Generator(5) }),
        ),
      ),
    );
    out.push(
      parity('quant', `loraLinear over NF4 ${dt} [2,9,64] r 8 fwd+bwd`, dt, (dev) => {
        const q = L.tidy(() => L.QuantizedWeight.quantize(upload(w, dev), 'nf4'));
        try {
          return forwardBackward(dev, [x, A, B], (xt, at, bt) => L.loraLinear(xt, q, null, at, bt, { scale: 2 }));
        } finally {
          q.dispose();
        }
      }),
    );
  }
  return out;
}
