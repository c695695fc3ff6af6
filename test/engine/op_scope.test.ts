// op_scope.test.ts — every op runs in its own memory scope (scopedOp in lib/core/memory.ts), and so
// does every backward function: what they create and do not return is disposed, what they return
// survives, and a tensor that existed before the op is never touched, even when the op hands it back.
// Counts are exact: numTensors counts every live tensor object (views and graph-saved refs too).
import t from 'tap';
import * as L from '../../lib';
import { Tensor } from '../../lib';
import { scopedOp } from '../../lib/core/memory';

const live = (): number => L.memory().numTensors;
const storages = (): number => L.memory().cpu.storages;

t.test('an op leaves exactly its result behind', async (t) => {
  const a = L.ones([4, 3]);
  const b = L.full([3], 2);
  const start = { n: live(), s: storages() };
  // add with alpha makes mul(b, alpha) first; binary ops make two broadcast views for the kernel.
  const y = L.add(a, b, 3);
  t.same(y.toNumbers(), new Array(12).fill(7));
  t.equal(live(), start.n + 1, 'add(a, b, alpha): one new tensor');
  t.equal(storages(), start.s + 1, 'and one new storage');
  // Integer inputs are cast to float32 before exp: the cast is a temporary.
  const i = L.tensor([0, 1, 2]);
  const e = L.exp(i);
  t.equal(e.dtype, 'float32');
  t.equal(live(), start.n + 3, 'exp of an int tensor: the float32 cast is gone');
  // Batch dims whose strides cannot merge make matmul copy the operand, then drop the copy.
  const base = L.arange(48, undefined, 1, { dtype: 'float32' });
  const r = base.reshape(2, 3, 2, 4);
  const p = r.permute(1, 0, 2, 3);
  const w = L.ones([4, 2]);
  const before = { n: live(), s: storages() };
  const m = L.matmul(p, w);
  t.same(m.shape, [3, 2, 2, 2]);
  t.equal(live(), before.n + 1, 'matmul through a permuted operand: only the result is left');
  t.equal(storages(), before.s + 1, 'the operand copy is freed');
  [a, b, y, i, e, base, r, p, w, m].forEach((x) => x.dispose());
  t.equal(live(), start.n - 2, 'all gone');
  t.equal(storages(), start.s - 2);
});

t.test('ops that hand back an input, or a view of it, leave the input alone', async (t) => {
  const x = L.ones([2, 3]);
  const start = live();
  const same = L.sumToShape(x, [2, 3]);
  t.equal(same, x, 'sumToShape to the same shape returns the input object');
  t.notOk(x.isDisposed, 'which is not disposed by the scope');
  const c = L.contiguous(x);
  const d = L.to(x, 'float32');
  t.not(c, x, 'contiguous of a contiguous tensor is a fresh view');
  t.equal(c.storage, x.storage, 'sharing storage');
  t.equal(d.storage, x.storage, 'to() with the same dtype too');
  t.equal(live(), start + 2);
  c.dispose();
  d.dispose();
  t.notOk(x.isDisposed, 'disposing the views leaves the input');
  t.same(x.toNumbers(), [1, 1, 1, 1, 1, 1]);
  const r = L.clamp(x);
  t.not(r, x, 'clamp without bounds is a clone');
  r.dispose();
  t.equal(live(), start);
  x.dispose();
});

t.test('in-place ops keep their destination and free their views', async (t) => {
  const dst = L.zeros([2, 3]);
  const src = L.tensor([1, 2, 3], { dtype: 'float32' });
  const start = live();
  L.copyInto(dst, src);
  L.addInPlace(dst, src);
  t.same(dst.toNumbers(), [2, 4, 6, 2, 4, 6]);
  t.equal(live(), start, 'no tensor left behind by copyInto / addInPlace');
  t.notOk(dst.isDisposed || src.isDisposed);
  [dst, src].forEach((x) => x.dispose());
});

t.test('an op that throws disposes what it made', async (t) => {
  const ones = L.ones([3, 4]);
  const x = ones.transpose(0, 1); // non-contiguous: gather copies it first
  const bad = L.tensor([[0, 9, 0]]);
  const start = { n: live(), s: storages() };
  t.throws(() => L.gather(x, 0, bad), /^\[gather\] index 9 out of range for dimension of size 4/, 'gather refuses the index');
  t.equal(live(), start.n, 'the contiguous copies and the output are gone');
  t.equal(storages(), start.s);
  const logits = L.zeros([2, 5]);
  const target = L.tensor([1, 7]);
  const s2 = { n: live(), s: storages() };
  t.throws(() => L.crossEntropy(logits, target), /target 7 out of range \[0, 5\)/);
  t.equal(live(), s2.n, 'crossEntropy: reshapes, loss rows and logsumexp freed on the error path');
  t.equal(storages(), s2.s);
  [ones, x, bad, logits, target].forEach((v) => v.dispose());
});

t.test('results move to the enclosing tidy; graph-saved tensors outlive the op scope', async (t) => {
  const start = live();
  const f64 = { dtype: 'float64' as const };
  // xg^T is a non-contiguous [2, 3] input: layerNorm copies it inside its scope and saves the copy
  // (as its own reference) for backward.
  const xg = L.tensor(
    [
      [1, 4],
      [2, 5],
      [3, 6],
    ],
    f64,
  ).setRequiresGrad();
  const w = L.tensor([0.5, -1, 2], f64).setRequiresGrad();
  const loss = L.tidy(() => L.sum(L.mul(L.layerNorm(L.transpose(xg, 0, 1), 3, w), L.tensor([1, 2, 3], f64))));
  t.notOk(loss.isDisposed, 'the tidy result survives');
  loss.backward();
  t.ok(xg.grad && w.grad, 'backward ran through the saved copy after the forward scope closed');
  t.equal(live(), start + 5, 'after backward (graph freed): xg, w, loss and the two gradients only');
  // Reference: the same computation on a contiguous leaf.
  const x2 = L.tensor(
    [
      [1, 2, 3],
      [4, 5, 6],
    ],
    f64,
  ).setRequiresGrad();
  const w2 = L.tensor([0.5, -1, 2], f64).setRequiresGrad();
  const loss2 = L.tidy(() => L.sum(L.mul(L.layerNorm(x2, 3, w2), L.tensor([1, 2, 3], f64))));
  loss2.backward();
  const gxT = L.transpose(x2.grad!, 0, 1);
  t.same(xg.grad!.toNumbers(), gxT.toNumbers(), 'same input gradient');
  t.same(w.grad!.toNumbers(), w2.grad!.toNumbers(), 'same weight gradient');
  [gxT, loss, loss2, x2, w2, w, xg].forEach((v) => v.dispose());
  t.equal(live(), start, 'graph, saved tensors and gradients all freed');
});

t.test('backward functions run in a scope: only gradients survive them', async (t) => {
  const start = live();
  const a = L.tensor([1, 5, 3, 3], { dtype: 'float32' }).setRequiresGrad();
  const b = L.tensor([2, 4, 3, 1], { dtype: 'float32' }).setRequiresGrad();
  // maximum's vjp makes comparisons, a scalar, halves and two wheres; pow's makes five more.
  const loss = L.tidy(() => L.sum(L.add(L.maximum(a, b), L.pow(a, b))));
  loss.backward();
  loss.dispose();
  // d/da: max picks a where a > b (half on the tie), plus b * a^(b-1).
  t.same(
    a.grad!.toNumbers().map((v) => Math.round(v * 1e3) / 1e3),
    [0 + 2, 1 + 500, 0.5 + 27, 1 + 1],
  );
  t.equal(live(), start + 4, 'a, b and their two gradients: nothing from the vjps is left');
  [a, b].forEach((v) => v.dispose());
  t.equal(live(), start);
});

t.test('scopedOp: nested scopes, array results, throwing', async (t) => {
  const start = live();
  let tmp!: Tensor;
  const pair = scopedOp((n: number): Tensor[] => {
    tmp = L.ones([n]);
    const inner = scopedOp(() => [L.add(tmp, 1), L.add(tmp, 2)])();
    return inner;
  })(3);
  t.ok(tmp.isDisposed, 'the temporary is disposed');
  t.same(
    pair.map((p) => p.toNumbers()),
    [
      [2, 2, 2],
      [3, 3, 3],
    ],
    'both returned tensors survive two scopes',
  );
  t.equal(live(), start + 2);
  let made!: Tensor;
  const boom = scopedOp((): Tensor => {
    made = L.ones([2]);
    throw new Error('boom');
  });
  t.throws(() => boom(), /boom/);
  t.ok(made.isDisposed, 'a throwing body loses what it made');
  const outer = L.tidy(() => {
    const r = L.neg(pair[0]);
    t.equal(live(), start + 3, 'inside tidy the op result exists');
    return L.neg(r);
  });
  t.same(outer.toNumbers(), [2, 2, 2]);
  t.equal(live(), start + 3, 'tidy freed the op result it did not return');
  [...pair, outer].forEach((p) => p.dispose());
  t.equal(live(), start);
});
