// bad_input.test.ts — bad calls into every public op and every native entry point must throw a JS
// Error whose message starts with `[op]` (naming the op), must never crash the process, and must
// not leak tensors when the caller uses tidy().
//
// The native table feeds `native.run` / `alloc` / `read` / `write` / `free` / `copyBytes` directly
// with wrong JS types, fake storage objects, negative or huge sizes, views that reach outside their
// storage (including extents that overflow 64-bit arithmetic), unknown kernels and too many dims.
import t from 'tap';
import type { Test } from 'tap';
import * as L from '../../lib';
import { Tensor, tensor } from '../../lib';
import { native, NativeView, KernelArg, StorageHandle } from '../../lib/native';

type Case = [name: string, op: string | RegExp, fn: () => unknown];

/** Runs each case inside tidy and checks the error and the tensor count. */
function runTable(t: Test, cases: Case[]): void {
  for (const [name, op, fn] of cases) {
    const before = L.memory().numTensors;
    let err: unknown = null;
    try {
      L.tidy(() => {
        fn();
      });
    } catch (e) {
      err = e;
    }
    // A kernel's error names the op's kernel (`[cross_entropy_fwd] ...`), which counts as naming the op.
    const re = typeof op === 'string' ? new RegExp(`^\\[${op}(_fwd|_bwd)?\\] \\S`) : op;
    if (!(err instanceof Error)) t.fail(`${name}: expected an Error, got ${err === null ? 'no throw' : String(err)}`);
    else t.match(err.message, re, `${name}: ${err.message}`);
    t.equal(L.memory().numTensors, before, `${name}: no tensor leaked`);
  }
}

const f32 = (shape: number[]): Tensor => L.zeros(shape);
const f64 = (shape: number[]): Tensor => L.zeros(shape, { dtype: 'float64' });

// ====================================================================== public ops
t.test('bad calls to creation ops', async (t) => {
  runTable(t, [
    ['tensor from a string', 'tensor', () => tensor('abc' as unknown as number)],
    ['tensor from null', 'tensor', () => tensor(null as unknown as number)],
    ['tensor from an object', 'tensor', () => tensor({ a: 1 } as unknown as number)],
    ['ragged nested array', 'tensor', () => tensor([[1, 2], [3]])],
    ['nested strings', 'tensor', () => tensor([['a']] as unknown as number[][])],
    ['unknown dtype', 'tensor', () => tensor([1], { dtype: 'float8' as L.DType })],
    ['unknown device string', 'tensor', () => tensor([1], { device: 'gpu' as L.Device })],
    ['device as a number', 'tensor', () => tensor([1], { device: 0 as unknown as L.Device })],
    ['shape/data mismatch', 'tensor', () => tensor([1, 2], { shape: [3] })],
    ['negative shape', 'tensor', () => tensor([1], { shape: [-1] })],
    ['zeros with negative dim', /^\[(zeros|full)\] /, () => L.zeros([2, -1])],
    ['zeros with fractional dim', /^\[(zeros|full)\] /, () => L.zeros([1.5])],
    ['zeros with a null shape', /^\[(zeros|full)\] /, () => L.zeros(null as unknown as number[])],
    ['zeros with 9 dims', /^\[(zeros|full)\] /, () => L.zeros([1, 1, 1, 1, 1, 1, 1, 1, 1])],
    ['full with a string value', 'full', () => L.full([2], 'x' as unknown as number)],
    ['arange step 0', 'arange', () => L.arange(0, 1, 0)],
    ['arange of a string', 'arange', () => L.arange('a' as unknown as number)],
    ['arange to Infinity', 'arange', () => L.arange(0, Infinity)],
    ['randn unknown dtype', 'randn', () => L.randn([2], { dtype: 'int8' as L.DType })],
    ['bernoulli p > 1', 'bernoulli', () => L.bernoulli([2], 1.5)],
    ['Generator negative seed', 'Generator', () => new L.Generator(-1)],
    ['empty unknown device', 'empty', () => L.empty([2], { device: 'tpu' as L.Device })],
  ]);
  if (!L.cudaAvailable()) {
    runTable(t, [
      ['cuda tensor without a GPU', /^\[tensor\] .*not available/, () => tensor([1], { device: 'cuda' })],
      ['zeros on cuda without a GPU', /^\[(zeros|full)\] .*not available/, () => L.zeros([2], { device: 'cuda' })],
      ['to(cuda) without a GPU', /^\[to\] .*not available/, () => f32([2]).to('cuda')],
      ['alloc on cuda without a GPU', /^\[alloc\] /, () => native.alloc(1, 16)],
    ]);
  }
});

t.test('bad calls to elementwise ops', async (t) => {
  const dead = f32([2]);
  dead.dispose();
  runTable(t, [
    ['add shape mismatch', 'add', () => L.add(f32([2, 3]), f32([4]))],
    ['add a string', 'add', () => L.add(f32([2]), 'a' as unknown as number)],
    ['add null', 'add', () => L.add(f32([2]), null as unknown as number)],
    ['add an object', 'add', () => L.add(f32([2]), {} as unknown as number)],
    ['add two numbers', 'add', () => L.add(1 as unknown as Tensor, 2)],
    ['mul a disposed tensor', 'mul', () => L.mul(f32([2]), dead)],
    ['mul shape mismatch', 'mul', () => L.mul(f32([3, 2]), f32([3]))],
    ['sub shape mismatch', 'sub', () => L.sub(f32([2]), f32([3]))],
    ['div shape mismatch', 'div', () => L.div(f32([2]), f32([3]))],
    ['pow shape mismatch', 'pow', () => L.pow(f32([2]), f32([3]))],
    ['maximum shape mismatch', 'maximum', () => L.maximum(f32([2]), f32([3]))],
    ['eq shape mismatch', 'eq', () => L.eq(f32([2]), f32([3]))],
    ['exp of a disposed tensor', 'exp', () => L.exp(dead)],
    ['exp of a string', 'exp', () => L.exp('x' as unknown as Tensor)],
    ['exp of null', 'exp', () => L.exp(null as unknown as Tensor)],
    ['gelu of undefined', 'gelu', () => L.gelu(undefined as unknown as Tensor)],
    ['neg of bool', /^\[(neg|unary)\] /, () => L.neg(tensor([true]))],
    ['arithmetic on bools', /^\[(add|binary)\] /, () => L.add(tensor([true]), tensor([false]))],
    ['where: int condition', 'where', () => L.where(tensor([1, 0]), f32([2]), f32([2]))],
    ['where: shape mismatch', 'where', () => L.where(tensor([true, false]), f32([3]), f32([3]))],
    ['where: condition not a tensor', 'where', () => L.where('yes' as unknown as Tensor, f32([2]), f32([2]))],
    ['maskedFill: float mask', 'maskedFill', () => L.maskedFill(f32([2]), f32([2]), 0)],
  ]);
});

t.test('bad calls to reductions', async (t) => {
  runTable(t, [
    ['sum dim out of range', 'sum', () => L.sum(f32([2, 3]), 2)],
    ['sum repeated dim', 'sum', () => L.sum(f32([2, 3]), [1, -1])],
    ['sum fractional dim', 'sum', () => L.sum(f32([2, 3]), 0.5)],
    ['sum of a string', 'sum', () => L.sum('x' as unknown as Tensor)],
    ['mean of ints', 'mean', () => L.mean(tensor([1, 2]))],
    ['var of ints', 'var', () => L.variance(tensor([1, 2]))],
    ['logsumexp of ints', 'logsumexp', () => L.logsumexp(tensor([1, 2]), 0)],
    ['max over an empty dim', 'max', () => L.max(f32([0, 3]), 0)],
    ['argmax dim out of range', 'argmax', () => L.argmax(f32([2]), 3)],
    ['item of many elements', 'item', () => f32([3]).item()],
  ]);
});

t.test('bad calls to matmul / linear', async (t) => {
  runTable(t, [
    ['matmul inner dims differ', 'matmul', () => L.matmul(f32([2, 3]), f32([4, 5]))],
    ['matmul batch dims do not broadcast', 'matmul', () => L.matmul(f32([2, 3, 4]), f32([3, 4, 5]))],
    ['matmul of ints', 'matmul', () => L.matmul(tensor([[1]]), tensor([[1]]))],
    ['matmul dtypes differ', 'matmul', () => L.matmul(f32([2, 2]), f64([2, 2]))],
    ['matmul 0-d', 'matmul', () => L.matmul(L.zeros([]), f32([2]))],
    ['matmul with null', 'matmul', () => L.matmul(f32([2, 2]), null as unknown as Tensor)],
    ['linear in-features differ', 'linear', () => L.linear(f32([2, 3]), f32([4, 5]))],
    ['linear 3-D weight', 'linear', () => L.linear(f32([2, 3]), f32([1, 4, 3]))],
    ['linear bias of the wrong size', 'linear', () => L.linear(f32([2, 3]), f32([4, 3]), f32([3]))],
    ['linear bias dtype', 'linear', () => L.linear(f32([2, 3]), f32([4, 3]), f64([4]))],
    ['linear bias a string', 'linear', () => L.linear(f32([2, 3]), f32([4, 3]), 'b' as unknown as Tensor)],
  ]);
});

t.test('bad calls to nn ops', async (t) => {
  const [B, H, T, D] = [1, 4, 3, 8];
  const q = (): Tensor => f32([B, H, T, D]);
  runTable(t, [
    ['softmax of ints', 'softmax', () => L.softmax(tensor([1, 2]))],
    ['softmax of a 0-d tensor', 'softmax', () => L.softmax(L.zeros([]))],
    ['softmax dim out of range', 'softmax', () => L.softmax(f32([2, 3]), 2)],
    ['logSoftmax of ints', 'log_softmax', () => L.logSoftmax(tensor([1, 2]))],
    ['crossEntropy target out of range', 'cross_entropy', () => L.crossEntropy(f32([2, 5]), tensor([1, 5]))],
    ['crossEntropy negative target', 'cross_entropy', () => L.crossEntropy(f32([2, 5]), tensor([1, -3]))],
    ['crossEntropy float target', 'cross_entropy', () => L.crossEntropy(f32([2, 5]), f32([2]))],
    ['crossEntropy target shape', 'cross_entropy', () => L.crossEntropy(f32([2, 5]), tensor([1, 2, 3]))],
    ['crossEntropy int logits', 'cross_entropy', () => L.crossEntropy(tensor([[1, 2]]), tensor([0]))],
    ['crossEntropy unknown reduction', 'cross_entropy', () => L.crossEntropy(f32([2, 5]), tensor([1, 2]), { reduction: 'avg' as 'mean' })],
    ['crossEntropy null target', 'cross_entropy', () => L.crossEntropy(f32([2, 5]), null as unknown as Tensor)],
    ['layerNorm shape mismatch', 'layer_norm', () => L.layerNorm(f32([2, 5]), 4)],
    ['layerNorm weight size', 'layer_norm', () => L.layerNorm(f32([2, 5]), 5, f32([4]))],
    ['layerNorm bias dtype', 'layer_norm', () => L.layerNorm(f32([2, 5]), 5, null, f64([5]))],
    ['layerNorm of ints', 'layer_norm', () => L.layerNorm(tensor([[1, 2]]), 2)],
    ['layerNorm of null', 'layer_norm', () => L.layerNorm(null as unknown as Tensor, 2)],
    ['rmsNorm of null', 'rms_norm', () => L.rmsNorm(null as unknown as Tensor)],
    ['rmsNorm weight size', 'rms_norm', () => L.rmsNorm(f32([2, 5]), f32([6]))],
    ['rmsNorm of ints', 'rms_norm', () => L.rmsNorm(tensor([[1, 2]]))],
    ['embedding float ids', 'embedding', () => L.embedding(f32([3]), f32([10, 4]))],
    ['embedding id out of range', 'embedding', () => L.embedding(tensor([1, 10]), f32([10, 4]))],
    ['embedding negative id', 'embedding', () => L.embedding(tensor([-1]), f32([10, 4]))],
    ['embedding 1-D weight', 'embedding', () => L.embedding(tensor([1]), f32([10]))],
    ['embedding ids a number', 'embedding', () => L.embedding(3 as unknown as Tensor, f32([10, 4]))],
    ['indexSelect index out of range', 'index_select', () => L.indexSelect(f32([3, 4]), 1, tensor([0, 4]))],
    ['indexSelect float index', 'index_select', () => L.indexSelect(f32([3, 4]), 0, f32([1]))],
    ['indexSelect 2-D index', 'index_select', () => L.indexSelect(f32([3, 4]), 0, tensor([[0]]))],
    ['indexSelect dim out of range', 'index_select', () => L.indexSelect(f32([3, 4]), 2, tensor([0]))],
    ['gather index out of range', 'gather', () => L.gather(f32([3, 4]), 1, tensor([[0, 4]]))],
    ['gather rank mismatch', 'gather', () => L.gather(f32([3, 4]), 1, tensor([0, 1]))],
    ['gather index larger than input', 'gather', () => L.gather(f32([3, 4]), 1, tensor([[0], [0], [0], [0]]))],
    ['gather float index', 'gather', () => L.gather(f32([3, 4]), 0, f32([1, 4]))],
    ['rope 3-D x', 'rope', () => L.rope(f32([2, 3, 8]), f32([3, 8]), f32([3, 8]))],
    ['rope table shape', 'rope', () => L.rope(q(), f32([4, 8]), f32([4, 8]))],
    ['rope odd head dim', 'rope', () => L.rope(f32([1, 1, 2, 3]), f32([2, 3]), f32([2, 3]))],
    ['rope table dtype', 'rope', () => L.rope(q(), f64([T, D]), f64([T, D]))],
    ['rope null tables', 'rope', () => L.rope(q(), null as unknown as Tensor, null as unknown as Tensor)],
    ['dropout p = 2', 'dropout', () => L.dropout(f32([2]), 2)],
    ['patchEmbed image not a multiple', 'patch_embed', () => L.patchEmbed(f32([1, 3, 10, 8]), f32([4, 3, 4, 4]))],
    ['patchEmbed channels differ', 'patch_embed', () => L.patchEmbed(f32([1, 2, 8, 8]), f32([4, 3, 4, 4]))],
    ['patchEmbed 3-D image', 'patch_embed', () => L.patchEmbed(f32([3, 8, 8]), f32([4, 3, 4, 4]))],
    ['attention H % Hkv != 0', 'attention', () => L.scaledDotProductAttention(f32([1, 4, 3, 8]), f32([1, 3, 5, 8]), f32([1, 3, 5, 8]))],
    ['attention head dims differ', 'attention', () => L.scaledDotProductAttention(q(), f32([1, 4, 5, 6]), f32([1, 4, 5, 6]))],
    ['attention k/v differ', 'attention', () => L.scaledDotProductAttention(q(), f32([1, 4, 5, 8]), f32([1, 4, 6, 8]))],
    ['attention batch differs', 'attention', () => L.scaledDotProductAttention(q(), f32([2, 4, 5, 8]), f32([2, 4, 5, 8]))],
    ['attention 3-D q', 'attention', () => L.scaledDotProductAttention(f32([4, 3, 8]), f32([4, 5, 8]), f32([4, 5, 8]))],
    ['attention int q', 'attention', () => L.scaledDotProductAttention(tensor([[[[1]]]]), tensor([[[[1]]]]), tensor([[[[1]]]]))],
    ['attention dtype mix', 'attention', () => L.scaledDotProductAttention(q(), f64([1, 4, 5, 8]), f64([1, 4, 5, 8]))],
    ['attention float mask', 'attention', () => L.scaledDotProductAttention(q(), f32([1, 4, 5, 8]), f32([1, 4, 5, 8]), { mask: f32([T, 5]) })],
    [
      'attention mask shape',
      'attention',
      () => L.scaledDotProductAttention(q(), f32([1, 4, 5, 8]), f32([1, 4, 5, 8]), { mask: tensor([[true, false]]) }),
    ],
    ['attention non-finite scale', 'attention', () => L.scaledDotProductAttention(q(), f32([1, 4, 5, 8]), f32([1, 4, 5, 8]), { scale: NaN })],
    ['attentionComposite H % Hkv', 'attention_composite', () => L.attentionComposite(f32([1, 4, 3, 8]), f32([1, 3, 5, 8]), f32([1, 3, 5, 8]))],
  ]);
});

t.test('bad calls to shape ops, autograd and memory', async (t) => {
  const dead = f32([2, 3]);
  dead.dispose();
  runTable(t, [
    ['reshape wrong size', 'reshape', () => f32([2, 3]).reshape(4, 2)],
    ['reshape two -1', 'reshape', () => f32([2, 3]).reshape(-1, -1)],
    ['view non-contiguous', 'view', () => f32([2, 3]).T.view(6)],
    ['permute wrong rank', 'permute', () => f32([2, 3]).permute(0)],
    ['permute repeated', 'permute', () => f32([2, 3]).permute(0, 0)],
    ['transpose dim out of range', 'transpose', () => f32([2, 3]).transpose(0, 2)],
    ['slice step 0', 'slice', () => f32([2, 3]).slice(0, 0, 2, 0)],
    ['slice fractional bound', 'slice', () => f32([2, 3]).slice(0, 0.5)],
    ['narrow out of range', 'narrow', () => f32([2, 3]).narrow(1, 2, 2)],
    ['select out of range', 'select', () => f32([2, 3]).select(1, 3)],
    ['expand incompatible', 'expand', () => f32([2, 3]).expand(4, 3)],
    ['squeeze dim out of range', 'squeeze', () => f32([2, 3]).squeeze(2)],
    ['unsqueeze dim out of range', 'unsqueeze', () => f32([2, 3]).unsqueeze(4)],
    ['cat of nothing', 'cat', () => L.cat([])],
    ['cat sizes differ', 'cat', () => L.cat([f32([2, 3]), f32([3, 3])], 1)],
    ['cat dtypes differ', 'cat', () => L.cat([f32([2]), f64([2])])],
    ['cat ranks differ', 'cat', () => L.cat([f32([2]), f32([1, 2])])],
    ['cat of a non-tensor', 'cat', () => L.cat([f32([2]), 3 as unknown as Tensor])],
    ['stack shapes differ', 'stack', () => L.stack([f32([2]), f32([3])])],
    ['split sections do not sum', 'split', () => f32([5]).split([2, 2])],
    ['split size 0', 'split', () => f32([5]).split(0)],
    ['chunk 0', 'chunk', () => f32([5]).chunk(0)],
    ['to unknown dtype', 'to', () => f32([2]).to('float8' as L.DType)],
    ['to unknown device', 'to', () => f32([2]).to('gpu' as L.Device)],
    ['size dim out of range', 'size', () => f32([2]).size(3)],
    ['dataSync of a disposed tensor', 'dataSync', () => dead.dataSync()],
    ['reshape of a disposed tensor', 'reshape', () => dead.reshape(6)],
    ['requiresGrad on ints', 'requiresGrad', () => tensor([1]).setRequiresGrad()],
    ['backward of a non-scalar', 'backward', () => f32([2]).setRequiresGrad().mul(2).backward()],
    ['backward without parameters', 'backward', () => f32([1]).sum().backward()],
    ['backward of a disposed tensor', 'backward', () => dead.backward()],
    ['tidy of an async fn', 'tidy', () => L.tidy((async () => f32([1])) as unknown as () => Tensor)],
  ]);
});

// ====================================================================== native entry points
t.test('bad calls straight into the native addon', async (t) => {
  const h = native.alloc(0, 16); // 4 float32
  const h2 = native.alloc(0, 16);
  const freed = native.alloc(0, 16);
  native.free(freed);
  const view = (over: Partial<NativeView> & Record<string, unknown> = {}): NativeView =>
    ({ s: h, d: 0, sh: [4], st: [1], o: 0, ...over }) as NativeView;
  const other = (): NativeView => ({ s: h2, d: 0, sh: [4], st: [1], o: 0 });
  const run = (k: unknown, args: unknown): void => native.run(k as string, args as KernelArg[]);
  const fake = {} as StorageHandle;
  const cases: Case[] = [
    // run: names, argument lists, argument types
    ['run with a numeric kernel name', 'run', () => run(123, [])],
    ['run with a null kernel name', 'run', () => run(null, [])],
    ['unknown kernel', 'no_such_kernel', () => run('no_such_kernel', [view()])],
    ['arguments not an array', 'copy', () => run('copy', null)],
    ['arguments a string', 'copy', () => run('copy', 'abc')],
    ['arguments an object', 'copy', () => run('copy', { 0: view() })],
    ['missing arguments', 'copy', () => run('copy', [])],
    ['missing second tensor', 'copy', () => run('copy', [view()])],
    ['number where a tensor is expected', 'copy', () => run('copy', [1, 2])],
    ['string where a tensor is expected', 'fill', () => run('fill', ['x', 1])],
    ['tensor where a number is expected', 'fill', () => run('fill', [view(), view()])],
    ['BigInt argument', 'fill', () => run('fill', [view(), 1n])],
    ['Symbol argument', 'fill', () => run('fill', [view(), Symbol('x')])],
    ['function argument', 'fill', () => run('fill', [() => 1, 1])],
    ['list with a string', 'fill', () => run('fill', [view(), ['a']])],
    // tensor views
    ['fake storage object', 'copy', () => run('copy', [view({ s: fake }), other()])],
    ['storage a fractional number', 'copy', () => run('copy', [view({ s: 5.5 as unknown as StorageHandle }), other()])],
    ['storage a negative number', 'copy', () => run('copy', [view({ s: -1 as unknown as StorageHandle }), other()])],
    ['storage beyond the handle range', 'copy', () => run('copy', [view({ s: (2 ** 53) as unknown as StorageHandle }), other()])],
    ['freed storage', 'fill', () => run('fill', [view({ s: freed }), 1])],
    ['unknown dtype code', 'fill', () => run('fill', [view({ d: 9 }), 1])],
    ['fractional dtype code', 'fill', () => run('fill', [view({ d: 0.5 }), 1])],
    ['dtype a string', 'fill', () => run('fill', [view({ d: 'float32' as unknown as number }), 1])],
    ['shape a string', 'fill', () => run('fill', [view({ sh: 'abc' as unknown as number[] }), 1])],
    ['shape missing', 'fill', () => run('fill', [{ s: h, d: 0, st: [1], o: 0 }, 1])],
    ['too many dims', 'fill', () => run('fill', [view({ sh: [1, 1, 1, 1, 1, 1, 1, 1, 1], st: [1, 1, 1, 1, 1, 1, 1, 1, 1] }), 1])],
    ['negative size', 'fill', () => run('fill', [view({ sh: [-1] }), 1])],
    ['fractional size', 'fill', () => run('fill', [view({ sh: [1.5] }), 1])],
    ['NaN size', 'fill', () => run('fill', [view({ sh: [NaN] }), 1])],
    ['Infinity size', 'fill', () => run('fill', [view({ sh: [Infinity] }), 1])],
    ['strides of the wrong length', 'fill', () => run('fill', [view({ st: [1, 1] }), 1])],
    ['string stride', 'fill', () => run('fill', [view({ st: ['1'] as unknown as number[] }), 1])],
    ['negative offset', 'fill', () => run('fill', [view({ o: -1 }), 1])],
    ['fractional offset', 'fill', () => run('fill', [view({ o: 0.5 }), 1])],
    ['offset a string', 'fill', () => run('fill', [view({ o: '0' as unknown as number }), 1])],
    ['view past the end', 'fill', () => run('fill', [view({ sh: [5] }), 1])],
    ['offset past the end', 'fill', () => run('fill', [view({ sh: [1], o: 4 }), 1])],
    ['float64 view of 16 bytes with 3 elements', 'fill', () => run('fill', [view({ d: 1, sh: [3] }), 1])],
    ['negative stride below the start', 'fill', () => run('fill', [view({ sh: [3], st: [-1] }), 1])],
    ['stride too large', 'fill', () => run('fill', [view({ sh: [2], st: [4] }), 1])],
    // extents whose 64-bit product wraps around (used to pass the range check)
    ['stride 2^62 (extent wraps to 0)', 'fill', () => run('fill', [view({ sh: [5], st: [2 ** 62] }), 1])],
    ['stride 2^63', 'fill', () => run('fill', [view({ sh: [3], st: [2 ** 63] }), 1])],
    ['offset 2^62 (byte range wraps)', 'fill', () => run('fill', [view({ d: 1, sh: [1], o: 2 ** 62 }), 1])],
    ['stride 2^47 in 3 dims', 'fill', () => run('fill', [view({ sh: [3, 3, 3], st: [2 ** 47, 2 ** 47, -(2 ** 47)] }), 1])],
    ['2^60 broadcast elements', 'fill', () => run('fill', [view({ sh: [2 ** 30, 2 ** 30], st: [0, 0] }), 1])],
    // kernel-level validation
    ['copy shapes differ', 'copy', () => run('copy', [view(), view({ sh: [2] })])],
    ['copy into itself (overlap)', 'copy', () => run('copy', [view({ sh: [2] }), view({ sh: [2], o: 1 })])],
    ['unary unknown op', 'unary', () => run('unary', [view(), other(), 'bogus'])],
    ['unary op a number', 'unary', () => run('unary', [view(), other(), 3])],
    ['unary dtypes differ', 'unary', () => run('unary', [view(), { ...other(), d: 4 }, 'exp'])],
    ['swiglu shapes differ', 'swiglu', () => run('swiglu', [view(), other(), view({ s: h2, sh: [2] })])],
    ['swiglu dtypes differ', 'swiglu', () => run('swiglu', [view(), other(), { ...other(), d: 4 }])],
    ['swiglu output is the gate', 'swiglu', () => run('swiglu', [view(), view(), other()])],
    ['swiglu_bwd strided dgate', /^\[swiglu_bwd\] dgate must be contiguous/, () => run('swiglu_bwd', [view({ sh: [2], st: [2] }), view({ s: h2, sh: [2] }), ...[0, 0, 0].map(() => view({ s: h2, sh: [2], o: 2 }))])],
    ['swiglu_bwd missing dy', 'swiglu_bwd', () => run('swiglu_bwd', [view(), other(), other(), other()])],
    ['swiglu_bwd dgate is the gate', 'swiglu_bwd', () => run('swiglu_bwd', [view(), other(), view(), view(), other()])],
    ['binary shapes differ', 'binary', () => run('binary', [view(), other(), view({ s: h2, sh: [2] }), 'add'])],
    ['binary unknown op', 'binary', () => run('binary', [view(), other(), other(), 'xor'])],
    ['binary compare into float', 'binary', () => run('binary', [view(), other(), other(), 'lt'])],
    ['where int condition', 'where', () => run('where', [view(), other(), other(), other()])],
    ['random unknown kind', 'random', () => run('random', [view(), 'cauchy', 0, 0, null])],
    ['random fractional seed', 'random', () => run('random', [view(), 'normal', 0.5, 0, null])],
    ['reduce R does not divide', 'reduce', () => run('reduce', [view({ sh: [1] }), other(), 'sum', 3, null, 1])],
    ['reduce unknown op', 'reduce', () => run('reduce', [view({ sh: [1] }), other(), 'median', 4])],
    ['reduce bad inner', 'reduce', () => run('reduce', [view({ sh: [2] }), other(), 'sum', 2, null, 3])],
    ['reduce R = 0 for max', 'reduce', () => run('reduce', [view({ sh: [1] }), other(), 'max', 0])],
    // out [2^11] x R 2^53 wraps to 2^64 == 0 == numel of an empty input (used to read out of bounds)
    [
      'reduce size product wraps',
      'reduce',
      () => {
        const big = native.alloc(0, 4 * 2 ** 11);
        try {
          run('reduce', [{ s: big, d: 0, sh: [2 ** 11], st: [1], o: 0 }, view({ sh: [0] }), 'sum', 2 ** 53, null, 1]);
        } finally {
          native.free(big);
        }
      },
    ],
    ['reduce R beyond the input', 'reduce', () => run('reduce', [view({ sh: [1] }), other(), 'sum', 8])],
    ['reduce R beyond 2^53', 'reduce', () => run('reduce', [view({ sh: [1] }), other(), 'sum', 2 ** 60])],
    ['softmax int input', 'softmax_fwd', () => run('softmax_fwd', [view({ d: 4 }), { ...other(), d: 4 }, false])],
    ['softmax flag not a boolean', 'softmax_fwd', () => run('softmax_fwd', [view(), other(), 'yes'])],
    [
      'matmul K differs',
      'matmul',
      () =>
        run('matmul', [
          view({ sh: [1, 2, 2], st: [4, 2, 1] }),
          { ...other(), sh: [1, 2, 2], st: [4, 2, 1] },
          { ...other(), sh: [1, 1, 2], st: [2, 2, 1] },
          null,
          null,
        ]),
    ],
    [
      'matmul 2-D operands',
      'matmul',
      () =>
        run('matmul', [view({ sh: [2, 2], st: [2, 1] }), { ...other(), sh: [2, 2], st: [2, 1] }, { ...other(), sh: [2, 2], st: [2, 1] }, null, null]),
    ],
    [
      'matmul bias of the wrong size',
      'matmul',
      () =>
        run('matmul', [
          view({ sh: [1, 2, 2], st: [4, 2, 1] }),
          { ...other(), sh: [1, 2, 2], st: [4, 2, 1] },
          { ...other(), sh: [1, 2, 2], st: [4, 2, 1] },
          { ...other(), sh: [3] },
          null,
        ]),
    ],
    [
      'matmul output aliases an input',
      'matmul',
      () =>
        run('matmul', [
          view({ sh: [1, 2, 2], st: [4, 2, 1] }),
          view({ sh: [1, 2, 2], st: [4, 2, 1] }),
          { ...other(), sh: [1, 2, 2], st: [4, 2, 1] },
          null,
          null,
        ]),
    ],
    [
      'cross_entropy target out of range',
      'cross_entropy_fwd',
      () => {
        const tg = native.alloc(0, 8);
        native.write(tg, 0, BigInt64Array.of(7n));
        run('cross_entropy_fwd', [
          view({ sh: [1] }),
          view({ s: h2, sh: [1] }),
          view({ s: h2, sh: [1, 2], st: [2, 1], o: 2 }),
          { s: tg, d: 5, sh: [1], st: [1], o: 0 },
          -100,
        ]);
      },
    ],
    [
      'index_select index out of range',
      'index_select',
      () => {
        const ix = native.alloc(0, 8);
        native.write(ix, 0, BigInt64Array.of(4n));
        run('index_select', [view({ sh: [1] }), other(), { s: ix, d: 5, sh: [1], st: [1], o: 0 }, 0]);
      },
    ],
    [
      'index_select negative index',
      'index_select',
      () => {
        const ix = native.alloc(0, 8);
        native.write(ix, 0, BigInt64Array.of(-1n));
        run('index_select', [view({ sh: [1] }), other(), { s: ix, d: 5, sh: [1], st: [1], o: 0 }, 0]);
      },
    ],
    ['index_select float index', 'index_select', () => run('index_select', [view({ sh: [1] }), other(), view({ s: h2, sh: [1] }), 0])],
    ['index_add dim out of range', 'index_add', () => run('index_add', [view(), { s: h2, d: 5, sh: [1], st: [1], o: 0 }, other(), 3])],
    [
      'gather index out of range',
      'gather',
      () => {
        const ix = native.alloc(0, 8);
        native.write(ix, 0, BigInt64Array.of(9n));
        run('gather', [view({ sh: [1] }), other(), { s: ix, d: 5, sh: [1], st: [1], o: 0 }, 0]);
      },
    ],
    [
      'scatter_add index out of range',
      'scatter_add',
      () => {
        const ix = native.alloc(0, 8);
        native.write(ix, 0, BigInt64Array.of(-2n));
        run('scatter_add', [view(), { s: ix, d: 5, sh: [1], st: [1], o: 0 }, view({ s: h2, sh: [1] }), 0]);
      },
    ],
    ['rope 2-D x', 'rope', () => run('rope', [view(), other(), other(), other()])],
    [
      'attention H % Hkv',
      'attention_fwd',
      () =>
        run('attention_fwd', [
          view({ sh: [1, 3, 1, 1], st: [3, 1, 1, 1] }),
          view({ s: h2, sh: [1, 3, 1], st: [3, 1, 1] }),
          view({ sh: [1, 3, 1, 1], st: [3, 1, 1, 1] }),
          view({ sh: [1, 2, 1, 1], st: [2, 1, 1, 1] }),
          view({ sh: [1, 2, 1, 1], st: [2, 1, 1, 1] }),
          null,
          false,
          1,
        ]),
    ],
    ['layer_norm_fwd missing args', 'layer_norm_fwd', () => run('layer_norm_fwd', [view()])],
    ['adamw bad step', 'adamw', () => run('adamw', [view(), other(), other(), other(), null, 0.1, 0.9, 0.99, 1e-8, 0, 0])],
    // storage functions
    ['alloc negative size', 'alloc', () => native.alloc(0, -1)],
    ['alloc fractional size', 'alloc', () => native.alloc(0, 1.5)],
    ['alloc NaN size', 'alloc', () => native.alloc(0, NaN)],
    ['alloc absurd size', 'alloc', () => native.alloc(0, 1e20)],
    ['alloc size a string', 'alloc', () => native.alloc(0, '16' as unknown as number)],
    ['alloc unknown device', 'alloc', () => native.alloc(5, 16)],
    ['alloc fractional device', 'alloc', () => native.alloc(0.5, 16)],
    ['alloc device a string', 'alloc', () => native.alloc('cpu' as unknown as number, 16)],
    ['read fake handle', 'read', () => native.read(fake, 0, 4)],
    ['read freed storage', 'read', () => native.read(freed, 0, 4)],
    ['read negative offset', 'read', () => native.read(h, -1, 4)],
    ['read past the end', 'read', () => native.read(h, 8, 12)],
    ['read absurd size', 'read', () => native.read(h, 0, 1e20)],
    ['read size a string', 'read', () => native.read(h, 0, '4' as unknown as number)],
    ['write a string', 'write', () => native.write(h, 0, 'abcd' as unknown as ArrayBufferView)],
    ['write a DataView', 'write', () => native.write(h, 0, new DataView(new ArrayBuffer(4)))],
    ['write past the end', 'write', () => native.write(h, 12, new Float32Array(2))],
    ['write to a freed storage', 'write', () => native.write(freed, 0, new Float32Array(1))],
    ['write to a fake handle', 'write', () => native.write(fake, 0, new Float32Array(1))],
    ['free a fake handle', 'free', () => native.free(fake)],
    ['free a freed storage', 'free', () => native.free(freed)],
    ['free a string', 'free', () => native.free('3' as unknown as StorageHandle)],
    ['copyBytes past the end', 'copy', () => native.copyBytes(h, 0, h2, 8, 16)],
    ['copyBytes fake source', 'copy', () => native.copyBytes(h, 0, fake, 0, 4)],
    ['copyBytes negative size', 'copy', () => native.copyBytes(h, 0, h2, 0, -4)],
    ['deviceInfo of a string', 'device_info', () => native.deviceInfo('cuda' as unknown as number)],
    ['memoryStats of device 7', 'memory', () => native.memoryStats(7)],
    ['kernels of device -1', 'kernels', () => native.kernels(-1)],
    ['hostView of a freed storage', 'hostView', () => native.hostView(freed)],
    ['hostView of a fake handle', 'hostView', () => native.hostView(fake)],
    ['hostView of a number', 'hostView', () => native.hostView(3 as unknown as StorageHandle)],
  ];
  runTable(t, cases);

  // Validation of the fused kernels (matmul, norms, attention) against malformed calls.
  const S = [0, 1, 2, 3, 4, 5].map(() => native.alloc(0, 512)); // separate storages: no accidental overlap
  const tv = (si: number, sh: number[], d = 0, o = 0, st?: number[]): NativeView => {
    const strides = st ?? sh.map((_, i) => sh.slice(i + 1).reduce((a, b) => a * b, 1));
    return { s: S[si], d, sh, st: strides, o };
  };
  const m3 = (si: number, b: number, r: number, c: number, d = 0): NativeView => tv(si, [b, r, c], d);
  const q4 = (si: number, sh: number[], d = 0): NativeView => tv(si, sh, d);
  const fused: Case[] = [
    ['matmul output shape wrong', 'matmul', () => run('matmul', [m3(0, 1, 3, 2), m3(1, 1, 2, 4), m3(2, 1, 4, 2), null, null])],
    ['matmul operand dtypes differ', 'matmul', () => run('matmul', [m3(0, 1, 2, 2), m3(1, 1, 2, 4), m3(2, 1, 4, 2, 1), null, null])],
    ['matmul int operands', 'matmul', () => run('matmul', [m3(0, 1, 2, 2, 4), m3(1, 1, 2, 4, 4), m3(2, 1, 4, 2, 4), null, null])],
    ['matmul bias dtype', 'matmul', () => run('matmul', [m3(0, 1, 2, 2), m3(1, 1, 2, 4), m3(2, 1, 4, 2), tv(3, [2], 1), null])],
    ['matmul non-contiguous output', 'matmul', () => run('matmul', [tv(0, [1, 2, 2], 0, 0, [4, 1, 2]), m3(1, 1, 2, 4), m3(2, 1, 4, 2), null, null])],
    ['matmul beta NaN', 'matmul', () => run('matmul', [m3(0, 1, 2, 2), m3(1, 1, 2, 4), m3(2, 1, 4, 2), null, NaN])],
    ['matmul beta a string', 'matmul', () => run('matmul', [m3(0, 1, 2, 2), m3(1, 1, 2, 4), m3(2, 1, 4, 2), null, 'x'])],
    ['matmul batch 3 vs 2', 'matmul', () => run('matmul', [m3(0, 3, 2, 2), m3(1, 3, 2, 4), m3(2, 2, 4, 2), null, null])],
    [
      'layer_norm_fwd weight size',
      'layer_norm_fwd',
      () => run('layer_norm_fwd', [tv(0, [2, 4]), tv(1, [2]), tv(2, [2]), tv(3, [2, 4]), tv(4, [3]), null, 1e-5]),
    ],
    [
      'layer_norm_fwd int stats',
      'layer_norm_fwd',
      () => run('layer_norm_fwd', [tv(0, [2, 4]), tv(1, [2], 4), tv(2, [2], 4), tv(3, [2, 4]), null, null, 1e-5]),
    ],
    [
      'layer_norm_fwd stats size',
      'layer_norm_fwd',
      () => run('layer_norm_fwd', [tv(0, [2, 4]), tv(1, [3]), tv(2, [3]), tv(3, [2, 4]), null, null, 1e-5]),
    ],
    [
      'layer_norm_fwd output shape',
      'layer_norm_fwd',
      () => run('layer_norm_fwd', [tv(0, [4, 2]), tv(1, [2]), tv(2, [2]), tv(3, [2, 4]), null, null, 1e-5]),
    ],
    [
      'layer_norm_fwd int input',
      'layer_norm_fwd',
      () => run('layer_norm_fwd', [tv(0, [2, 4], 4), tv(1, [2]), tv(2, [2]), tv(3, [2, 4], 4), null, null, 1e-5]),
    ],
    [
      'layer_norm_fwd NaN eps',
      'layer_norm_fwd',
      () => run('layer_norm_fwd', [tv(0, [2, 4]), tv(1, [2]), tv(2, [2]), tv(3, [2, 4]), null, null, NaN]),
    ],
    [
      'layer_norm_fwd output aliases input',
      'layer_norm_fwd',
      () => run('layer_norm_fwd', [tv(0, [2, 4]), tv(1, [2]), tv(2, [2]), tv(0, [2, 4], 0, 1), null, null, 1e-5]),
    ],
    [
      'layer_norm_bwd dw without w',
      'layer_norm_bwd',
      () => run('layer_norm_bwd', [tv(0, [2, 4]), tv(1, [4]), null, tv(2, [2, 4]), tv(3, [2, 4]), null, tv(4, [2]), tv(5, [2])]),
    ],
    [
      'layer_norm_bwd dy shape',
      'layer_norm_bwd',
      () => run('layer_norm_bwd', [tv(0, [2, 4]), null, null, tv(2, [2, 3]), tv(3, [2, 4]), null, tv(4, [2]), tv(5, [2])]),
    ],
    ['rms_norm_fwd rstd size', 'rms_norm_fwd', () => run('rms_norm_fwd', [tv(0, [2, 4]), tv(1, [5]), tv(3, [2, 4]), null, 1e-6])],
    ['rms_norm_fwd weight dtype', 'rms_norm_fwd', () => run('rms_norm_fwd', [tv(0, [2, 4]), tv(1, [2]), tv(3, [2, 4]), tv(4, [4], 1), 1e-6])],
    ['rms_norm_bwd x shape', 'rms_norm_bwd', () => run('rms_norm_bwd', [tv(0, [2, 4]), null, tv(2, [2, 4]), tv(3, [4, 2]), null, tv(5, [2])])],
    [
      'attention_fwd mask shape',
      'attention_fwd',
      () =>
        run('attention_fwd', [
          q4(0, [1, 2, 3, 4]),
          tv(1, [1, 2, 3]),
          q4(2, [1, 2, 3, 4]),
          q4(3, [1, 2, 5, 4]),
          q4(4, [1, 2, 5, 4]),
          tv(5, [1, 2, 3, 4], 7),
          false,
          0.5,
        ]),
    ],
    [
      'attention_fwd float mask',
      'attention_fwd',
      () =>
        run('attention_fwd', [
          q4(0, [1, 2, 3, 4]),
          tv(1, [1, 2, 3]),
          q4(2, [1, 2, 3, 4]),
          q4(3, [1, 2, 5, 4]),
          q4(4, [1, 2, 5, 4]),
          tv(5, [1, 2, 3, 5]),
          false,
          0.5,
        ]),
    ],
    [
      'attention_fwd int lse',
      'attention_fwd',
      () =>
        run('attention_fwd', [
          q4(0, [1, 2, 3, 4]),
          tv(1, [1, 2, 3], 4),
          q4(2, [1, 2, 3, 4]),
          q4(3, [1, 2, 5, 4]),
          q4(4, [1, 2, 5, 4]),
          null,
          false,
          0.5,
        ]),
    ],
    [
      'attention_fwd lse shape',
      'attention_fwd',
      () =>
        run('attention_fwd', [
          q4(0, [1, 2, 3, 4]),
          tv(1, [1, 3, 2]),
          q4(2, [1, 2, 3, 4]),
          q4(3, [1, 2, 5, 4]),
          q4(4, [1, 2, 5, 4]),
          null,
          false,
          0.5,
        ]),
    ],
    [
      'attention_fwd output aliases q',
      'attention_fwd',
      () =>
        run('attention_fwd', [
          q4(0, [1, 2, 3, 4]),
          tv(1, [1, 2, 3]),
          q4(0, [1, 2, 3, 4]),
          q4(3, [1, 2, 5, 4]),
          q4(4, [1, 2, 5, 4]),
          null,
          false,
          0.5,
        ]),
    ],
    [
      'attention_fwd q last stride 2',
      'attention_fwd',
      () =>
        run('attention_fwd', [
          q4(0, [1, 2, 3, 4]),
          tv(1, [1, 2, 3]),
          tv(2, [1, 2, 3, 4], 0, 0, [48, 24, 8, 2]),
          q4(3, [1, 2, 5, 4]),
          q4(4, [1, 2, 5, 4]),
          null,
          false,
          0.5,
        ]),
    ],
    [
      'attention_fwd causal not a boolean',
      'attention_fwd',
      () =>
        run('attention_fwd', [q4(0, [1, 2, 3, 4]), tv(1, [1, 2, 3]), q4(2, [1, 2, 3, 4]), q4(3, [1, 2, 5, 4]), q4(4, [1, 2, 5, 4]), null, 1, 0.5]),
    ],
    [
      'attention_fwd zero kv heads',
      'attention_fwd',
      () =>
        run('attention_fwd', [
          q4(0, [1, 2, 3, 4]),
          tv(1, [1, 2, 3]),
          q4(2, [1, 2, 3, 4]),
          q4(3, [1, 0, 5, 4]),
          q4(4, [1, 0, 5, 4]),
          null,
          false,
          0.5,
        ]),
    ],
    [
      'attention_bwd dk shape',
      'attention_bwd',
      () =>
        run('attention_bwd', [
          q4(0, [1, 2, 3, 4]),
          q4(1, [1, 2, 3, 4]),
          q4(5, [1, 2, 5, 4]),
          q4(2, [1, 2, 3, 4]),
          q4(3, [1, 2, 5, 4]),
          q4(4, [1, 2, 5, 4]),
          q4(2, [1, 2, 3, 4]),
          q4(3, [1, 2, 3, 4]),
          tv(4, [1, 2, 3]),
          null,
          false,
          0.5,
        ]),
    ],
    ['attention_bwd missing args', 'attention_bwd', () => run('attention_bwd', [q4(0, [1, 2, 3, 4])])],
  ];
  runTable(t, fused);
  S.forEach((x) => native.free(x));

  // The storages are intact after all that (a double free was refused above), data round-trips.
  native.write(h, 0, Float32Array.of(1, 2, 3, 4));
  native.run('copy', [other(), view()]);
  t.same(Array.from(new Float32Array(native.read(h2, 0, 16))), [1, 2, 3, 4], 'storages still usable after the bad calls');
  native.free(h);
  native.free(h2);
});

t.test('the process survived and nothing leaked', async (t) => {
  t.equal(L.memory().numTensors, 0, 'no live tensors');
  const x = L.tidy(() => L.add(L.ones([2]), 1));
  t.same(x.arraySync(), [2, 2], 'the engine still works');
  x.dispose();
});
