// Activation checkpointing recomputes a block in backward: the gradients must equal the plain
// path's exactly (same kernels, same order), with nothing leaked, whether the block's input
// requires grad or only its parameters do.
import t from 'tap';
import * as path from 'path';
import * as L from '../../lib';
import { checkpoint } from '../../lib/core/recompute';
import { Linear } from '../../lib/nn';
import { loadLlava } from '../../lib/models/loader';
import { SafetensorsFile } from '../../lib/io/safetensors';
import { TEST_DIR, readInts } from '../helpers';

function grads(ps: L.Tensor[]): number[][] {
  return ps.map((p) => Array.from(p.grad!.dataSync() as Float64Array));
}

t.test('a block of two layers, input with and without grad', async (tt) => {
  const l1 = new Linear(5, 7, true, { dtype: 'float64', init: true });
  const l2 = new Linear(7, 3, true, { dtype: 'float64', init: true });
  const params = [...l1.parameters(), ...l2.parameters()];
  const block = (x: L.Tensor): L.Tensor => l2.forward(L.tanh(l1.forward(x)));
  for (const inputGrad of [true, false]) {
    const x = L.randn([4, 5], { dtype: 'float64', requiresGrad: inputGrad });
    const start = L.memory().numTensors;
    L.tidy(() => L.sum(L.square(block(x))).backward());
    const plain = grads(params);
    const xg = inputGrad ? x.grad!.toNumbers() : null;
    params.forEach((p) => p.zeroGrad());
    x.zeroGrad();
    L.tidy(() => L.sum(L.square(checkpoint(block, [x], params))).backward());
    tt.same(grads(params), plain, `parameter gradients identical (input requiresGrad ${inputGrad})`);
    if (xg) tt.same(x.grad!.toNumbers(), xg, 'input gradient identical');
    else tt.equal(x.grad, null, 'no gradient for an input that does not require it');
    params.forEach((p) => p.zeroGrad());
    x.zeroGrad();
    tt.equal(L.memory().numTensors, start, 'nothing leaked');
    x.dispose();
  }
  l1.dispose();
  l2.dispose();
});

t.test('tiny LLaVA: checkpointed decoder layers give the same gradients in both stages', async (tt) => {
  const dir = path.join(TEST_DIR, 'fixtures', 'tiny-llava');
  const ref = SafetensorsFile.open(path.join(dir, 'reference.safetensors'));
  const ints = (n: string): number[] => readInts(ref, n);
  const rows = (a: number[]): number[][] => [a.slice(0, 143), a.slice(143)];
  const pixels = L.keep(L.tensor(ref.readAsFloat32('pixel_values'), { shape: ref.info('pixel_values').shape }));
  const batch = { inputIds: rows(ints('input_ids')), attentionMask: rows(ints('attention_mask')), labels: rows(ints('labels')), pixelValues: pixels };
  for (const stage of [1, 2] as const) {
    const out: Map<string, number[]>[] = [];
    for (const ck of [false, true]) {
      const m = loadLlava(dir);
      m.setStage(stage);
      m.lm.gradientCheckpointing = ck;
      L.tidy(() => m.loss(batch).loss.backward());
      out.push(
        new Map(
          m
            .namedParameters()
            .filter(([, p]) => p.grad)
            .map(([n, p]) => [n, Array.from(p.grad!.dataSync() as Float32Array)]),
        ),
      );
      m.dispose();
    }
    tt.equal(out[1].size, stage === 1 ? 4 : 25, `stage ${stage}: the same parameters get gradients`);
    tt.ok(
      [...out[0]].every(([n, g]) => JSON.stringify(g) === JSON.stringify(out[1].get(n))),
      `stage ${stage}: gradients bit-identical`,
    );
  }
  pixels.dispose();
});
