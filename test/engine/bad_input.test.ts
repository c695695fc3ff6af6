// bad_input.test.ts — bad calls into every public op must throw a JS Error whose message starts with
// `[op]` (naming the op), must never crash the process, and must not leak tensors when the caller uses
// tidy(): creation ops, elementwise ops, reductions, matmul / linear, the nn ops, shape ops, autograd and
// memory. The native entry points are fed bad calls directly in bad_input_native.test.ts; the table runner
// is in bad_input_helpers.ts.
import t from 'tap';
import * as L from '../../lib';
import { Tensor, tensor } from '../../lib';
import { native } from '../../lib/native';
import { runTable } from './bad_input_helpers';

const f32 = (shape: number[]): Tensor => L.zeros(shape);
const f64 = (shape: number[]): Tensor => L.zeros(shape, { dtype: 'float64' });

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
