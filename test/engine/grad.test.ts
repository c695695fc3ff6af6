// grad.test.ts — finite-difference gradient checks in float64 for every differentiable op, and the
// semantics of the autograd tape (accumulation, zeroGrad, noGrad, detach, frozen inputs, freed
// graphs, implicit gradients only for scalars).
//
// gradCheck (helpers.ts) projects the output onto fixed random weights and compares backward()
// with central differences (eps 1e-6) for every input element. In float64 the truncation error is
// ~eps^2 * f''' and the rounding error ~1e-16 * |L| / eps ~ 1e-9, so the default atol 1e-7 /
// rtol 1e-6 leaves a 10x margin (every op passes at 1e-8 / 1e-7) while catching both a wrong term
// (O(1)) and a float32 intermediate hiding in a float64 path (~1e-7 relative: the attention lse was
// one). Inputs of ops with kinks (relu, abs, max, maximum) stay further than eps from the kink.
// backward() runs outside tidy, so a tensor leaked by a vjp fails the check too.
import t from 'tap';
import * as L from '../../lib';
import { Tensor, tensor } from '../../lib';
import { gradCheck, randT, randAway, numel, rng, f64, assertClose } from '../helpers';
import type { AttnDims } from '../helpers';

const F = 'float64' as const;
const r64 = (shape: number[], seed: number, lo = -1, hi = 1): Tensor => randT(shape, seed, F, lo, hi);
const away = (shape: number[], seed: number, lo = -1, hi = 1, gap = 0.05): Tensor =>
  tensor(randAway(numel(shape), seed, lo, hi, gap), { shape, dtype: F });

// ====================================================================== unary
t.test('gradcheck: unary ops', async (t) => {
  const cases: [string, (x: Tensor) => Tensor, number, number][] = [
    ['neg', L.neg, -2, 2],
    ['exp', L.exp, -2, 2],
    ['log', L.log, 0.2, 3],
    ['sqrt', L.sqrt, 0.2, 3],
    ['rsqrt', L.rsqrt, 0.2, 3],
    ['abs', L.abs, -2, 2],
    ['sin', L.sin, -3, 3],
    ['cos', L.cos, -3, 3],
    ['tanh', L.tanh, -2, 2],
    ['sigmoid', L.sigmoid, -4, 4],
    ['relu', L.relu, -2, 2],
    ['gelu', (x) => L.gelu(x), -3, 3],
    ['gelu tanh', (x) => L.gelu(x, 'tanh'), -3, 3],
    ['quickGelu', L.quickGelu, -3, 3],
    ['silu', L.silu, -3, 3],
    ['square', L.square, -2, 2],
    ['reciprocal', L.reciprocal, 0.3, 2],
    ['erf', L.erf, -2, 2],
    ['pow 3', (x) => L.pow(x, 3), -2, 2],
    ['pow 0.5', (x) => L.pow(x, 0.5), 0.2, 3],
    ['pow -2.5', (x) => L.pow(x, -2.5), 0.3, 2],
    ['pow 2', (x) => x.pow(2), -2, 2],
  ];
  for (const [i, [name, fn, lo, hi]] of cases.entries()) {
    const x = away([3, 4], 10 + i, lo, hi);
    gradCheck(t, fn, [x], { msg: name });
    // a strided input: the gradient lands in the base's layout
    gradCheck(t, (b) => fn(b.T), [x], { msg: `${name} (transposed input)` });
    x.dispose();
  }
});

// ====================================================================== binary
t.test('gradcheck: binary ops with broadcasting and scalars', async (t) => {
  const shapes: [number[], number[]][] = [
    [
      [2, 3],
      [2, 3],
    ],
    [
      [3, 1],
      [1, 4],
    ],
    [[2, 3, 4], [4]],
    [[], [2, 3]],
    [
      [2, 1, 3],
      [4, 1],
    ],
  ];
  const ops: [string, (a: Tensor, b: Tensor) => Tensor, number, number][] = [
    ['add', (a, b) => L.add(a, b), -1, 1],
    ['add alpha', (a, b) => L.add(a, b, 2.5), -1, 1],
    ['sub', (a, b) => L.sub(a, b), -1, 1],
    ['sub alpha', (a, b) => L.sub(a, b, 0.5), -1, 1],
    ['mul', L.mul, -1, 1],
    ['div', L.div, 0.5, 2],
    ['pow', L.pow, 0.5, 2],
  ];
  for (const [oi, [name, fn, lo, hi]] of ops.entries()) {
    for (const [si, [sa, sb]] of shapes.entries()) {
      const a = r64(sa, 100 + oi * 10 + si, lo, hi);
      const b = r64(sb, 200 + oi * 10 + si, lo, hi);
      gradCheck(t, fn, [a, b], { msg: `${name} [${sa}] x [${sb}]` });
      a.dispose();
      b.dispose();
    }
  }
  // maximum / minimum: distinct values (ties split the gradient, which is not differentiable)
  for (const [name, fn] of [
    ['maximum', L.maximum],
    ['minimum', L.minimum],
  ] as const) {
    const a = tensor(
      [
        [0.1, 0.9, -0.5],
        [0.4, -0.2, 0.7],
      ],
      { dtype: F },
    );
    const b = tensor([0.3, 0.2, -0.1], { dtype: F });
    gradCheck(t, fn, [a, b], { msg: `${name} [2,3] x [3]` });
    [a, b].forEach((x) => x.dispose());
  }
  // scalar operands on either side
  const x = r64([2, 3], 300, 0.5, 2);
  gradCheck(t, (a) => L.sub(3, a), [x], { msg: 'number - tensor' });
  gradCheck(t, (a) => L.div(2, a), [x], { msg: 'number / tensor' });
  gradCheck(t, (a) => L.pow(2, a), [x], { msg: 'number ** tensor' });
  gradCheck(t, (a) => L.mul(a, 1.5), [x], { msg: 'tensor * number' });
  gradCheck(t, (a) => L.mul(a, a), [x], { msg: 'x * x (same input twice)' });
  gradCheck(t, (a) => L.add(L.mul(a, a), L.exp(a)), [x], { msg: 'diamond graph' });
  // where / maskedFill / clamp
  const cond = tensor([
    [true, false, true],
    [false, false, true],
  ]);
  const y = r64([3], 301);
  gradCheck(t, (a, b) => L.where(cond, a, b), [x, y], { msg: 'where (broadcast y)' });
  gradCheck(t, (a) => L.where(cond, a, 0), [x], { msg: 'where with a scalar' });
  gradCheck(t, (a) => L.maskedFill(a, cond, -1), [x], { msg: 'maskedFill' });
  const z = tensor([-2, -0.5, 0.3, 1.5], { dtype: F });
  gradCheck(t, (a) => L.clamp(a, -1, 1), [z], { msg: 'clamp' });
  // mixed dtypes: a float32 input cast up to float64 by promotion keeps a float32 gradient
  const x32 = randT([3], 302, 'float32').setRequiresGrad();
  const w = r64([3], 303);
  L.tidy(() => L.mul(x32, w).sum().backward());
  t.equal(x32.grad?.dtype, 'float32', 'gradient of a promoted input has the input dtype');
  assertClose(t, x32.grad!, f64(w), { atol: 1e-7, rtol: 1e-6, msg: 'gradient through promotion' });
  [x, y, cond, z, x32, w].forEach((v) => v.dispose());
});

// ====================================================================== reductions
t.test('gradcheck: reductions', async (t) => {
  const x = r64([3, 4, 5], 400);
  const dims: (number | number[] | undefined)[] = [undefined, 0, 2, -2, [0, 2], [1, 2]];
  for (const dim of dims)
    for (const keepdim of [false, true]) {
      const lbl = `dim=${JSON.stringify(dim)} keepdim=${keepdim}`;
      gradCheck(t, (a) => L.sum(a, dim, keepdim), [x], { msg: `sum ${lbl}` });
      gradCheck(t, (a) => L.mean(a, dim, keepdim), [x], { msg: `mean ${lbl}` });
      gradCheck(t, (a) => L.variance(a, dim, { keepdim }), [x], { msg: `var ${lbl}` });
      gradCheck(t, (a) => L.variance(a, dim, { keepdim, correction: 0 }), [x], { msg: `var correction 0 ${lbl}` });
      if (dim !== undefined) gradCheck(t, (a) => L.logsumexp(a, dim, keepdim), [x], { msg: `logsumexp ${lbl}` });
    }
  // max/min: distinct values, single dim or all
  for (const dim of [undefined, 0, 1, -1])
    for (const keepdim of [false, true]) {
      gradCheck(t, (a) => L.max(a, dim, keepdim), [x], { msg: `max dim=${dim} keepdim=${keepdim}` });
      gradCheck(t, (a) => L.min(a, dim, keepdim), [x], { msg: `min dim=${dim} keepdim=${keepdim}` });
    }
  gradCheck(t, (a) => L.sum(a.permute(2, 0, 1), [0, 1]), [x], { msg: 'sum over a permuted view' });
  gradCheck(t, (a) => a.sum().mul(a.mean()), [x], { msg: 'product of two reductions' });
  x.dispose();
  // max with ties: PyTorch splits the gradient evenly between the tied positions
  const tie = tensor(
    [
      [1, 3, 3],
      [2, 0, 1],
    ],
    { dtype: F },
  ).setRequiresGrad();
  L.tidy(() => tie.max(1).sum().backward());
  t.same(
    tie.grad!.arraySync(),
    [
      [0, 0.5, 0.5],
      [1, 0, 0],
    ],
    'max splits the gradient between ties',
  );
  tie.dispose();
});

// ====================================================================== matmul / linear
t.test('gradcheck: matmul and linear', async (t) => {
  const cases: [string, number[], number[], boolean?, boolean?][] = [
    ['2-D', [3, 4], [4, 5]],
    ['batched', [2, 3, 4], [2, 4, 5]],
    ['broadcast 2-D rhs', [2, 3, 4], [4, 5]],
    ['broadcast 2-D lhs', [3, 4], [2, 4, 5]],
    ['broadcast [2,1] x [3]', [2, 1, 3, 4], [3, 4, 2]],
    ['1-D . 1-D', [4], [4]],
    ['1-D @ 2-D', [4], [4, 3]],
    ['2-D @ 1-D', [3, 4], [4]],
    ['1-D @ 3-D', [4], [2, 4, 3]],
    ['a transposed', [3, 4], [4, 5], true],
    ['b transposed', [3, 4], [4, 5], false, true],
    ['both transposed', [3, 4], [4, 5], true, true],
  ];
  for (const [i, [name, sa, sb, ta, tb]] of cases.entries()) {
    const a = r64(ta ? [sa[1], sa[0]] : sa, 500 + i);
    const b = r64(tb ? [sb[1], sb[0]] : sb, 600 + i);
    gradCheck(t, (x, y) => L.matmul(ta ? x.T : x, tb ? y.T : y), [a, b], { msg: `matmul ${name}` });
    a.dispose();
    b.dispose();
  }
  for (const xs of [[5], [3, 5], [2, 3, 5]]) {
    const x = r64(xs, 700);
    const w = r64([4, 5], 701);
    const b = r64([4], 702);
    gradCheck(t, (a, ww, bb) => L.linear(a, ww, bb), [x, w, b], { msg: `linear x[${xs}] with bias` });
    gradCheck(t, (a, ww) => L.linear(a, ww), [x, w], { msg: `linear x[${xs}] without bias` });
    [x, w, b].forEach((v) => v.dispose());
  }
  const x = r64([5, 3], 703);
  const w = r64([4, 5], 704);
  gradCheck(t, (a, ww) => L.linear(a.T, ww), [x, w], { msg: 'linear on a transposed input' });
  [x, w].forEach((v) => v.dispose());
});

// ====================================================================== nn ops
t.test('gradcheck: softmax, logSoftmax, crossEntropy', async (t) => {
  const x = r64([2, 3, 5], 800, -2, 2);
  for (const dim of [-1, 0, 1]) {
    gradCheck(t, (a) => L.softmax(a, dim), [x], { msg: `softmax dim ${dim}` });
    gradCheck(t, (a) => L.logSoftmax(a, dim), [x], { msg: `logSoftmax dim ${dim}` });
  }
  gradCheck(t, (a) => L.softmax(a.transpose(0, 2)), [x], { msg: 'softmax of a strided view' });
  x.dispose();
  const logits = r64([2, 3, 6], 801, -2, 2);
  const target = tensor([
    [0, 5, -100],
    [2, 2, 4],
  ]);
  for (const reduction of ['mean', 'sum', 'none'] as const)
    gradCheck(t, (a) => L.crossEntropy(a, target, { reduction }), [logits], { msg: `crossEntropy ${reduction} with ignored rows` });
  const t2 = tensor(
    [
      [1, 1, 3],
      [1, 0, 5],
    ],
    { dtype: 'int32' },
  );
  gradCheck(t, (a) => L.crossEntropy(a, t2, { ignoreIndex: 1 }), [logits], { msg: 'crossEntropy ignoreIndex=1, int32 targets' });
  gradCheck(t, (a) => L.crossEntropy(L.mul(a, a), target), [logits], { msg: 'crossEntropy behind another op' });
  [logits, target, t2].forEach((v) => v.dispose());
});

t.test('gradcheck: layerNorm and rmsNorm', async (t) => {
  const x = r64([2, 3, 6], 900, -2, 2);
  const w = r64([6], 901, 0.5, 1.5);
  const b = r64([6], 902);
  gradCheck(t, (a, ww, bb) => L.layerNorm(a, 6, ww, bb), [x, w, b], { msg: 'layerNorm weight+bias' });
  gradCheck(t, (a, ww) => L.layerNorm(a, 6, ww, null), [x, w], { msg: 'layerNorm weight only' });
  gradCheck(t, (a, bb) => L.layerNorm(a, 6, null, bb), [x, b], { msg: 'layerNorm bias only' });
  gradCheck(t, (a) => L.layerNorm(a, 6), [x], { msg: 'layerNorm no affine' });
  gradCheck(t, (a, ww, bb) => L.layerNorm(a, 6, ww, bb), [x, w, b], { skip: [1, 2], msg: 'layerNorm frozen weight and bias' });
  gradCheck(t, (a, ww, bb) => L.layerNorm(a, 6, ww, bb), [x, w, b], { skip: [0], msg: 'layerNorm frozen input' });
  const w2 = r64([3, 6], 903, 0.5, 1.5);
  gradCheck(t, (a, ww) => L.layerNorm(a, [3, 6], ww), [x, w2], { msg: 'layerNorm over two dims' });
  gradCheck(t, (a) => L.layerNorm(a.transpose(0, 1), 6), [x], { msg: 'layerNorm strided input' });
  gradCheck(t, (a, ww) => L.rmsNorm(a, ww), [x, w], { msg: 'rmsNorm weight' });
  gradCheck(t, (a) => L.rmsNorm(a), [x], { msg: 'rmsNorm no weight' });
  gradCheck(t, (a, ww) => L.rmsNorm(a, ww, 0.5), [x, w], { msg: 'rmsNorm eps=0.5' });
  gradCheck(t, (a, ww) => L.rmsNorm(a, ww), [x, w], { skip: [0], msg: 'rmsNorm frozen input' });
  [x, w, b, w2].forEach((v) => v.dispose());
});

t.test('gradcheck: embedding, indexSelect, gather (repeated indices accumulate)', async (t) => {
  const w = r64([6, 4], 1000);
  const ids = tensor([
    [1, 3, 1],
    [5, 1, 0],
  ]);
  gradCheck(t, (ww) => L.embedding(ids, ww), [w], { msg: 'embedding with repeated ids' });
  const x = r64([3, 4, 5], 1001);
  const idx = tensor([2, 0, 2, 2], { dtype: 'int32' });
  for (const dim of [0, 1, 2]) {
    const i2 = dim === 0 ? tensor([2, 0, 2, 1]) : idx;
    gradCheck(t, (a) => L.indexSelect(a, dim, i2), [x], { msg: `indexSelect dim ${dim}` });
    if (i2 !== idx) i2.dispose();
  }
  gradCheck(t, (a) => L.indexSelect(a.transpose(0, 2), 0, tensor([4, 4, 1])), [x], { msg: 'indexSelect of a strided view' });
  const g = r64([3, 4], 1002);
  const gi0 = tensor([
    [2, 0, 2, 2],
    [2, 2, 1, 0],
  ]);
  const gi1 = tensor([
    [3, 3, 3],
    [0, 1, 0],
    [2, 2, 2],
  ]);
  gradCheck(t, (a) => L.gather(a, 0, gi0), [g], { msg: 'gather dim 0 repeated' });
  gradCheck(t, (a) => L.gather(a, 1, gi1), [g], { msg: 'gather dim 1 repeated' });
  [w, ids, x, idx, g, gi0, gi1].forEach((v) => v.dispose());
});

t.test('gradcheck: rope, dropout, patchEmbed', async (t) => {
  const [B, H, T, D] = [2, 2, 3, 6];
  const cos = new Float64Array(T * D);
  const sin = new Float64Array(T * D);
  for (let p = 0; p < T; p++)
    for (let i = 0; i < D / 2; i++) {
      const a = p / 10000 ** ((2 * i) / D);
      cos[p * D + i] = cos[p * D + i + D / 2] = Math.cos(a);
      sin[p * D + i] = sin[p * D + i + D / 2] = Math.sin(a);
    }
  const c = tensor(cos, { shape: [T, D], dtype: F });
  const s = tensor(sin, { shape: [T, D], dtype: F });
  const x = r64([B, H, T, D], 1100);
  gradCheck(t, (a) => L.rope(a, c, s), [x], { msg: 'rope (standard tables)' });
  gradCheck(t, (a) => L.rope(a.transpose(1, 2).contiguous().transpose(1, 2), c, s), [x], { msg: 'rope of a strided view' });
  // arbitrary tables (halves differ): the backward must not assume sin[i] == sin[i + D/2]
  const cb = r64([B, T, D], 1101);
  const sb = r64([B, T, D], 1102);
  gradCheck(t, (a) => L.rope(a, cb, sb), [x], { msg: 'rope (arbitrary per-batch tables)' });
  const xd = r64([4, 5], 1103);
  gradCheck(t, (a) => L.dropout(a, 0.4, true, new L.Generator(3)), [xd], { msg: 'dropout (fixed mask)' });
  const img = r64([1, 2, 4, 6], 1104);
  const pw = r64([3, 2, 2, 2], 1105);
  const pb = r64([3], 1106);
  gradCheck(t, (a, w, b) => L.patchEmbed(a, w, b), [img, pw, pb], { msg: 'patchEmbed' });
  gradCheck(t, (a, w) => L.patchEmbed(a, w), [img, pw], { msg: 'patchEmbed no bias' });
  [c, s, x, cb, sb, xd, img, pw, pb].forEach((v) => v.dispose());
});

t.test('gradcheck: attention (causal, masked, GQA, decode) and its composite', async (t) => {
  const cases: (AttnDims & { name: string; causal?: boolean; mask?: boolean; scale?: number })[] = [
    { name: 'plain', B: 1, H: 2, Hkv: 2, T: 3, S: 4, D: 4 },
    { name: 'negative scale, causal', B: 1, H: 2, Hkv: 1, T: 4, S: 5, D: 3, causal: true, scale: -0.8 },
    { name: 'causal T=S', B: 1, H: 2, Hkv: 2, T: 4, S: 4, D: 4, causal: true },
    { name: 'causal T<S', B: 1, H: 1, Hkv: 1, T: 2, S: 5, D: 3, causal: true },
    { name: 'GQA H=4 Hkv=2 causal', B: 2, H: 4, Hkv: 2, T: 3, S: 3, D: 4, causal: true },
    { name: 'masked', B: 2, H: 2, Hkv: 1, T: 3, S: 4, D: 4, mask: true },
    { name: 'masked + causal', B: 1, H: 2, Hkv: 2, T: 4, S: 4, D: 3, mask: true, causal: true },
    { name: 'decode T=1 S=9', B: 1, H: 4, Hkv: 2, T: 1, S: 9, D: 4 },
  ];
  for (const [i, c] of cases.entries()) {
    const q = r64([c.B, c.H, c.T, c.D], 1200 + i * 3, -1.5, 1.5);
    const k = r64([c.B, c.Hkv, c.S, c.D], 1201 + i * 3, -1.5, 1.5);
    const v = r64([c.B, c.Hkv, c.S, c.D], 1202 + i * 3);
    let mask: Tensor | null = null;
    if (c.mask) {
      const r = rng(1300 + i);
      const m = new Uint8Array(c.B * c.T * c.S).map(() => (r() < 0.6 ? 1 : 0));
      for (let row = 0; row < c.B * c.T; row++) m[row * c.S] = 1; // every row sees key 0
      mask = tensor(m, { shape: [c.B, 1, c.T, c.S], dtype: 'bool' });
    }
    const opts = { isCausal: c.causal, mask, scale: c.scale };
    gradCheck(t, (a, b, d) => L.scaledDotProductAttention(a, b, d, opts), [q, k, v], { msg: `attention ${c.name}` });
    gradCheck(t, (a, b, d) => L.attentionComposite(a, b, d, opts), [q, k, v], { msg: `attention composite ${c.name}` });
    [q, k, v, mask].forEach((x) => x?.dispose());
  }
  // q/k/v as transposed views of [B, T, H, D] projections
  const q = r64([1, 3, 2, 4], 1250);
  const k = r64([1, 5, 1, 4], 1251);
  const v = r64([1, 5, 1, 4], 1252);
  gradCheck(t, (a, b, d) => L.scaledDotProductAttention(a.transpose(1, 2), b.transpose(1, 2), d.transpose(1, 2), { isCausal: true }), [q, k, v], {
    msg: 'attention on strided views',
  });
  [q, k, v].forEach((x) => x.dispose());
});

// ====================================================================== views
t.test('gradcheck: views and shape ops', async (t) => {
  const x = r64([2, 3, 4], 1400);
  const y = r64([2, 2, 4], 1401);
  const col = r64([3, 1], 1402);
  const cases: [string, (a: Tensor) => Tensor][] = [
    ['reshape', (a) => a.reshape(4, 6)],
    ['reshape of permuted (copy)', (a) => a.permute(1, 0, 2).reshape(-1)],
    ['view', (a) => a.view(6, 4)],
    ['permute', (a) => a.permute(2, 0, 1)],
    ['transpose', (a) => a.transpose(0, 2)],
    ['slice step 2', (a) => a.slice(2, 0, 4, 2)],
    ['slice negative start', (a) => a.slice(1, -2)],
    ['narrow', (a) => a.narrow(1, 1, 2)],
    ['select', (a) => a.select(1, 2)],
    ['select on a transposed view', (a) => a.T.select(0, 1)],
    ['unsqueeze/squeeze', (a) => a.unsqueeze(1).mul(2).squeeze(1)],
    ['flatten', (a) => a.flatten(1)],
    ['contiguous of strided', (a) => a.transpose(0, 1).contiguous()],
    ['clone', (a) => a.clone()],
    [
      'split (all pieces used)',
      (a) =>
        L.cat(
          a.split([1, 2], 1).map((p, i) => p.mul(i + 1)),
          1,
        ),
    ],
    ['chunk', (a) => a.chunk(2, 2)[1]],
    ['stack', (a) => L.stack([a, a.mul(2)], 1)],
    ['cat along 0 with itself', (a) => L.cat([a, a], 0)],
    ['sumToShape via expand', (a) => a.select(2, 0).unsqueeze(0).expand(5, 2, 3)],
  ];
  for (const [name, fn] of cases) gradCheck(t, fn, [x], { msg: name });
  gradCheck(t, (a, b) => L.cat([a, b], 1), [x, y], { msg: 'cat two inputs along 1' });
  gradCheck(t, (a, b) => L.cat([b, a.narrow(1, 0, 2)], 2), [x, y], { msg: 'cat a view along 2' });
  gradCheck(t, (c) => c.expand(2, 3, 4), [col], { msg: 'expand [3,1] -> [2,3,4]' });
  gradCheck(t, (c) => c.expand(-1, 5).mul(c), [col], { msg: 'expand and reuse' });
  [x, y, col].forEach((v) => v.dispose());
});

// ====================================================================== autograd semantics
t.test('autograd: accumulation, zeroGrad, retainGraph, errors', async (t) => {
  const x = tensor([1, 2, 3], { dtype: F, requiresGrad: true });
  L.tidy(() => x.mul(x).sum().backward());
  t.same(x.grad!.arraySync(), [2, 4, 6], 'first backward');
  L.tidy(() => x.mul(x).sum().backward());
  t.same(x.grad!.arraySync(), [4, 8, 12], 'second backward accumulates');
  x.zeroGrad();
  t.equal(x.grad, null, 'zeroGrad clears');
  L.tidy(() => x.mul(3).sum().backward());
  t.same(x.grad!.arraySync(), [3, 3, 3], 'fresh after zeroGrad');
  x.zeroGrad();

  // backward twice without retainGraph
  L.tidy(() => {
    const loss = x.exp().sum();
    loss.backward();
    t.throws(() => loss.backward(), /\[backward\].*(freed|retainGraph)/, 'second backward without retainGraph throws');
  });
  x.zeroGrad();
  L.tidy(() => {
    const loss = x.exp().sum();
    loss.backward(undefined, { retainGraph: true });
    loss.backward();
    assertClose(
      t,
      x.grad!,
      f64(x).map((v) => 2 * Math.exp(v)),
      { msg: 'retainGraph allows a second pass' },
    );
  });
  x.zeroGrad();

  // non-scalar outputs
  L.tidy(() => {
    const y = x.mul(2);
    t.throws(() => y.backward(), /\[backward\].*scalar/, 'implicit gradient only for scalars');
    t.throws(() => y.backward(L.ones([2], { dtype: F })), /\[backward\]/, 'gradient shape must match');
    y.backward(tensor([1, 0, 2], { dtype: F }));
    t.same(x.grad!.arraySync(), [2, 0, 4], 'explicit upstream gradient');
  });
  x.zeroGrad();

  // not requiring grad
  L.tidy(() => {
    const c = tensor([1, 2], { dtype: F });
    t.throws(() => c.sum().backward(), /\[backward\]/, 'backward without any parameter throws');
    t.throws(() => tensor([1, 2]).setRequiresGrad(), /\[requiresGrad\]/, 'integer tensors cannot require grad');
  });

  // a leaf itself
  L.tidy(() => {
    const s = tensor(2, { dtype: F, requiresGrad: true });
    s.backward();
    t.same(s.grad!.arraySync(), 1, 'backward on a scalar leaf');
  });
  x.dispose();
});

t.test('autograd: noGrad, enableGrad, detach, frozen inputs', async (t) => {
  const w = tensor(
    [
      [1, 2],
      [3, 4],
    ],
    { dtype: F, requiresGrad: true },
  );
  const frozen = tensor(
    [
      [0.5, -1],
      [2, 1],
    ],
    { dtype: F },
  );
  const xin = tensor([1, -1], { dtype: F });
  L.tidy(() => {
    const y = L.noGrad(() => L.matmul(w, xin));
    t.equal(y.requiresGrad, false, 'noGrad: output does not require grad');
    t.equal(y.gradFn, null, 'noGrad: no graph node recorded');
    t.equal(L.isGradEnabled(), true, 'grad mode restored');
    L.noGrad(() => {
      t.equal(L.isGradEnabled(), false);
      const z = L.enableGrad(() => w.mul(2));
      t.ok(z.requiresGrad && z.gradFn, 'enableGrad inside noGrad records');
    });
    const d = w.detach();
    t.equal(d.requiresGrad, false, 'detach cuts the graph');
    t.equal(d.storage, w.storage, 'detach shares data');
    const loss = L.add(L.mul(w, frozen), L.mul(d, w)).sum();
    loss.backward();
    // d(w*frozen + d*w)/dw = frozen + d (d treated as a constant)
    t.same(
      w.grad!.arraySync(),
      [
        [1.5, 1],
        [5, 5],
      ],
      'detached operand acts as a constant',
    );
    t.equal(frozen.grad, null, 'frozen input gets no .grad');
    t.equal(d.grad, null, 'detached tensor gets no .grad');
  });
  w.zeroGrad();
  L.tidy(() => {
    // a frozen linear weight with a trainable input
    const x = tensor([[1, 2]], { dtype: F, requiresGrad: true });
    L.linear(x, frozen).sum().backward();
    t.equal(frozen.grad, null, 'frozen weight of linear gets no .grad');
    t.same(x.grad!.arraySync(), [[2.5, 0]], 'input gradient through a frozen weight');
    const ln = L.layerNorm(x, 2, frozen.select(0, 0), null).sum();
    ln.backward();
    t.equal(frozen.grad, null, 'frozen norm weight gets no .grad');
  });
  [w, frozen, xin].forEach((v) => v.dispose());
  t.equal(L.memory().numTensors, 0, 'nothing left alive');
});
