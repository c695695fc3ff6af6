// matmul.ts — matmul with PyTorch semantics (1-D promotion, broadcast batch dims) and linear
// (x @ W^T + b with the bias fused into the kernel's epilogue).
//
// The kernel takes [Bt, M, K] @ [Bt, K, N] views with arbitrary strides, so transposes are free and
// broadcast batch dims are stride 0. Batch dims are collapsed into one when their strides allow it;
// otherwise the operand is copied. For a 2-D weight, the weight gradient is one [K, N'] GEMM over
// all rows (x flattened to [rows, K]) rather than a batched GEMM plus a sum. Each op runs in its
// own scope (scopedOp), which frees the 3-D views and any operand copies.
import { Tensor, Shape, numelOf } from '../core/tensor';
import { isFloat } from '../core/dtype';
import { scopedOp } from '../core/memory';
import { record } from '../core/autograd';
import { kernel } from '../core/dispatch';
import { broadcastShapes, broadcastView, checkTensor, checkSameDevice, checkDTypeEq } from './util';
import { contiguous, reshape, transpose, unsqueeze, squeeze, sumToShape } from './view';
import { sum } from './reduce';

/** A [Bt, R, C] view of t broadcast to [...batch, R, C], copying only if the batch dims cannot merge. */
function as3d(t: Tensor, batch: Shape, op: string): Tensor {
  const R = t.shape[t.ndim - 2];
  const C = t.shape[t.ndim - 1];
  const full = broadcastView(t, [...batch, R, C], op);
  const nb = batch.length;
  const bt = numelOf(batch);
  let stride = 0;
  let ok = true;
  // Merge batch dims: each non-unit dim must step exactly over the next ones.
  let expect: number | null = null;
  for (let i = nb - 1; i >= 0; i--) {
    if (full.shape[i] === 1) continue;
    if (expect === null) {
      stride = full.strides[i];
      expect = full.strides[i] * full.shape[i];
    } else if (full.strides[i] !== expect) {
      ok = false;
      break;
    } else expect = full.strides[i] * full.shape[i];
  }
  if (ok) return full.makeView([bt, R, C], [stride, full.strides[nb], full.strides[nb + 1]], full.offset);
  const c = contiguous(full);
  return c.makeView([bt, R, C], [R * C, C, 1], c.offset);
}

const rawMatmul = scopedOp(function rawMatmul(a: Tensor, b: Tensor, bias: Tensor | null, op: string): Tensor {
  // a [..., M, K], b [..., K, N], both at least 2-D
  const M = a.shape[a.ndim - 2];
  const K = a.shape[a.ndim - 1];
  const N = b.shape[b.ndim - 1];
  if (b.shape[b.ndim - 2] !== K)
    throw new Error(`[${op}] shapes [${a.shape.join(', ')}] and [${b.shape.join(', ')}] cannot be multiplied (${K} vs ${b.shape[b.ndim - 2]})`);
  const batch = broadcastShapes(a.shape.slice(0, -2), b.shape.slice(0, -2), op);
  const out = Tensor.empty([...batch, M, N], a.dtype, a.device);
  const o3 = out.makeView([numelOf(batch), M, N], [M * N, N, 1], 0);
  kernel('matmul', [o3, as3d(a, batch, op), as3d(b, batch, op), bias, null]);
  return out;
});

function checkOperands(op: string, a: Tensor, b: Tensor): void {
  checkTensor(a, op, 'first operand');
  checkTensor(b, op, 'second operand');
  checkSameDevice(op, a, b);
  checkDTypeEq(op, a, b, 'operands');
  if (!isFloat(a.dtype)) throw new Error(`[${op}] operands must be floating, got ${a.dtype}`);
  if (a.ndim === 0 || b.ndim === 0) throw new Error(`[${op}] operands must be at least 1-D`);
}

/** A 2-D column-major view (a transposed row-major matrix): unit stride down the rows. */
const colMajor = (t: Tensor): boolean => t.ndim === 2 && t.shape[0] > 1 && t.shape[1] > 1 && t.strides[0] === 1 && t.strides[1] >= t.shape[0];

/** Matrix product with torch.matmul semantics. */
export const matmul = scopedOp(function matmul(a: Tensor, b: Tensor): Tensor {
  checkOperands('matmul', a, b);
  if (a.ndim === 1 || b.ndim === 1) {
    let s = matmul(a.ndim === 1 ? unsqueeze(a, 0) : a, b.ndim === 1 ? unsqueeze(b, -1) : b);
    if (b.ndim === 1) s = squeeze(s, -1);
    if (a.ndim === 1) s = squeeze(s, a.ndim === 1 && b.ndim === 1 ? -1 : -2);
    return s;
  }
  const out = rawMatmul(a, b, null, 'matmul');
  const aShape = a.shape.slice();
  const bShape = b.shape.slice();
  return record(
    'matmul',
    out,
    [a, b],
    (g, [as, bs]) => {
      let ga: Tensor | null = null;
      let gb: Tensor | null = null;
      // A 2-D operand that is a transposed view (x @ W^T) gets its gradient computed transposed, as a
      // view of a row-major product: the transpose's own backward then turns it back into a
      // contiguous gradient, instead of the product being written row-major and copied transposed.
      const flat = aShape.length === 2 && bShape.length === 2;
      if (a.requiresGrad)
        ga =
          flat && colMajor(as)
            ? transpose(rawMatmul(bs, transpose(g, 0, 1), null, 'matmul_bwd'), 0, 1)
            : sumToShape(rawMatmul(g, transpose(bs, -1, -2), null, 'matmul_bwd'), aShape);
      if (b.requiresGrad) {
        if (flat && colMajor(bs)) gb = transpose(rawMatmul(transpose(g, 0, 1), as, null, 'matmul_bwd'), 0, 1);
        else if (bShape.length === 2 && aShape.length > 2) {
          const a2 = reshape(as, [-1, aShape[aShape.length - 1]]);
          gb = rawMatmul(transpose(a2, 0, 1), reshape(g, [-1, g.shape[g.ndim - 1]]), null, 'matmul_bwd');
        } else gb = sumToShape(rawMatmul(transpose(as, -1, -2), g, null, 'matmul_bwd'), bShape);
      }
      return [ga, gb];
    },
    [a, b],
  );
});

/** y = x @ weight^T + bias, weight [out, in] as in torch.nn.Linear. */
export const linear = scopedOp(function linear(x: Tensor, weight: Tensor, bias?: Tensor | null): Tensor {
  checkOperands('linear', x, weight);
  if (weight.ndim !== 2) throw new Error(`[linear] weight must be 2-D [out, in], got [${weight.shape.join(', ')}]`);
  const [O, I] = weight.shape;
  if (x.shape[x.ndim - 1] !== I) throw new Error(`[linear] input has ${x.shape[x.ndim - 1]} features, weight expects ${I}`);
  if (bias) {
    checkTensor(bias, 'linear', 'bias');
    checkDTypeEq('linear', x, bias, 'input and bias');
    checkSameDevice('linear', x, bias);
    if (bias.ndim !== 1 || bias.shape[0] !== O) throw new Error(`[linear] bias must be [${O}], got [${bias.shape.join(', ')}]`);
  }
  const lead = x.shape.slice(0, -1);
  const x2 = x.ndim === 2 ? x : reshape(x, [lead.reduce((p, d) => p * d, 1), I]);
  const b = bias && !bias.isContiguous() ? contiguous(bias) : (bias ?? null);
  const y2 = rawMatmul(x2, transpose(weight, 0, 1), b, 'linear');
  const y = x.ndim === 2 ? y2 : reshape(y2, [...lead, O]);
  return record(
    'linear',
    y,
    [x, weight, bias],
    (g, [xs, ws]) => {
      // Explicit row counts: with O or I = 0 a -1 could not be inferred.
      const rows = lead.reduce((p, d) => p * d, 1);
      const g2 = reshape(g, [rows, O]);
      const gx = x.requiresGrad ? reshape(rawMatmul(g2, ws, null, 'linear_bwd'), xs.shape) : null;
      const gw = weight.requiresGrad ? rawMatmul(transpose(g2, 0, 1), reshape(xs, [rows, I]), null, 'linear_bwd') : null;
      const gb = bias && bias.requiresGrad ? sum(g2, 0) : null;
      return [gx, gw, gb];
    },
    [x, weight],
  );
});
