// Grad-ready hooks (lib/core/autograd.ts onGradReady): each hooked leaf fires once per backward pass, after
// its last accumulation (so .grad is final when the hook reads it), in the order backward finishes with the
// leaves; parameters inside a checkpointed block fire after that block's recompute; a gradient that would
// arrive after its hook is an error.
import t from 'tap';
import * as L from '../../lib';
import { onGradReady } from '../../lib/core/autograd';
import { checkpoint } from '../../lib/core/recompute';

function leaf(v: number[]): L.Tensor {
  return L.keep(L.tensor(v, { dtype: 'float32' })).setRequiresGrad(true);
}

t.test('fires once per leaf with the final gradient, in backward order', (t) => {
  const a = leaf([1, 2]);
  const b = leaf([3, 4]);
  const c = leaf([5, 6]); // used twice: fires after its second use is processed
  const seen: [string, number[]][] = [];
  const rm = [a, b, c].map((p, i) => onGradReady(p, (x) => seen.push(['abc'[i], x.grad!.toNumbers()])));
  L.tidy(() => {
    const h = L.mul(a, c); // first layer
    const y = L.mul(L.add(h, b), c); // second layer: b and c
    L.sum(y).backward();
  });
  t.same(
    seen.map(([n]) => n),
    ['b', 'a', 'c'],
    'b is final after the second layer; a and c once the first is done',
  );
  for (const [n, g] of seen) {
    const p = { a, b, c }[n as 'a' | 'b' | 'c'];
    t.same(g, p.grad!.toNumbers(), `${n}: the hook saw the final gradient`);
  }
  // A second pass accumulates and fires again.
  seen.length = 0;
  L.tidy(() => L.sum(L.mul(a, b)).backward());
  t.same(seen.map(([n]) => n).sort(), ['a', 'b'], 'a leaf off the graph (c) does not fire');
  rm.forEach((f) => f());
  seen.length = 0;
  L.tidy(() => L.sum(L.mul(a, b)).backward());
  t.same(seen, [], 'removed hooks stay silent');
  [a, b, c].forEach((p) => (p.zeroGrad(), p.dispose()));
  t.end();
});

t.test('checkpointed blocks: their params fire after the recompute, undeclared ones at the end', (t) => {
  const w1 = leaf([2, 3]);
  const w2 = leaf([4, 5]);
  const x = leaf([1, 1]);
  const order: string[] = [];
  const rm = [onGradReady(w1, () => order.push('w1')), onGradReady(w2, () => order.push('w2')), onGradReady(x, () => order.push('x'))];
  L.tidy(() => {
    const h = checkpoint((v) => L.mul(v!, w1), [x], [w1]); // declared
    const y = checkpoint((v) => L.mul(v!, w2), [h], []); // w2 hidden in the closure
    L.sum(y).backward();
  });
  t.same(order, ['x', 'w1', 'w2'], 'x and w1 once the first block is recomputed; w2, undeclared, at the end');
  t.same(w1.grad!.toNumbers(), [4, 5]);
  t.same(w2.grad!.toNumbers(), [2, 3]);
  rm.forEach((f) => f());
  [w1, w2, x].forEach((p) => (p.zeroGrad(), p.dispose()));
  t.end();
});

t.test('a gradient after the hook fired is an error; hooks need leaves', (t) => {
  const w = leaf([1, 2]);
  const x = leaf([3, 4]);
  const rm = onGradReady(w, () => undefined);
  // w is used after a block that hides it: the outer use is processed first and fires it, then the
  // block's recompute adds more.
  t.throws(
    () =>
      L.tidy(() => {
        const y = L.mul(
          checkpoint((v) => L.mul(v!, w), [x], []),
          w,
        );
        L.sum(y).backward();
      }),
    /reached a leaf after its grad-ready hook ran/,
  );
  rm();
  t.throws(() => L.tidy(() => onGradReady(L.mul(w, 2), () => undefined)), /not a leaf/);
  [w, x].forEach((p) => (p.zeroGrad(), p.dispose()));
  t.end();
});
