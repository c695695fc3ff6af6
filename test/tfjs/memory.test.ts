// memory.test.ts — the `llava` tfjs backend's memory accounting: tf.memory() counts, native bytes
// freed the moment tfjs disposes a tensor, and no growth over 1,000 tidy'd training steps. Also:
// data handed to users is a copy, and bad input throws a JS error instead of crashing.
import t from 'tap';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-core/dist/register_all_gradients';
import { BACKEND_NAME, LlavaBackend } from '../../lib/tfjs';
import { memory as engineMemory } from '../../lib/core/memory';

t.before(async () => {
  await tf.setBackend(BACKEND_NAME);
});

const nativeBytes = (): number => engineMemory().cpu.bytes;

t.test('tf.memory() counts tensors, buffers and bytes; dispose frees native storage at once', async (t) => {
  t.equal(tf.getBackend(), 'llava');
  const m0 = tf.memory();
  const n0 = nativeBytes();
  const a = tf.tensor2d([1, 2, 3, 4, 5, 6], [2, 3]);
  const b = tf.reshape(a, [3, 2]); // shares a's data bucket
  const m1 = tf.memory();
  t.equal(m1.numTensors - m0.numTensors, 2);
  t.equal(m1.numDataBuffers - m0.numDataBuffers, 1, 'a reshape shares its data');
  t.equal(m1.numBytes - m0.numBytes, 48, 'tfjs counts the bytes of each tensor, views included');
  const backend = tf.backend() as LlavaBackend;
  t.equal(backend.memory().unreliable, false);
  t.equal(
    backend.memory().numBytesInLlava - (m0 as unknown as { numBytesInLlava: number }).numBytesInLlava,
    24,
    'the backend counts native bytes once',
  );
  t.ok(nativeBytes() - n0 >= 24, 'the bytes live in native storage');
  a.dispose();
  t.ok(nativeBytes() - n0 >= 24, 'still referenced by the reshape');
  b.dispose();
  t.equal(nativeBytes(), n0, 'freed as soon as the last tensor goes');
  t.same(tf.memory().numTensors, m0.numTensors);
});

t.test('dataSync hands out a copy that outlives the tensor', async (t) => {
  const x = tf.tensor1d([1, 2, 3]);
  const y = tf.exp(x);
  const v = y.dataSync();
  y.dispose();
  x.dispose();
  const big = tf.ones([1000]); // reuse of freed memory must not change v
  t.same(
    Array.from(v).map((z) => Math.round(z * 1e4) / 1e4),
    [2.7183, 7.3891, 20.0855],
  );
  big.dispose();
});

t.test('1,000 tidy training steps leak neither tensors nor native bytes', async (t) => {
  const w = tf.variable(tf.tensor2d([[0.1], [-0.2], [0.3]]));
  const xs = tf.tensor2d([1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 0, 1], [4, 3]);
  const ys = tf.tensor2d([1, 2, 3, 4], [4, 1]);
  const opt = tf.train.adam(0.01);
  const step = (): number =>
    tf.tidy(() => {
      const loss = opt.minimize(() => tf.losses.meanSquaredError(ys, tf.matMul(xs, w)) as tf.Scalar, true)!;
      return loss.dataSync()[0];
    });
  const first = step(); // creates the optimizer's slots
  const m0 = tf.memory();
  const n0 = nativeBytes();
  let last = first;
  for (let i = 0; i < 1000; i++) last = step();
  const m1 = tf.memory();
  t.equal(m1.numTensors, m0.numTensors, 'numTensors flat');
  t.equal(m1.numBytes, m0.numBytes, 'numBytes flat');
  t.equal(m1.numDataBuffers, m0.numDataBuffers, 'numDataBuffers flat');
  t.equal(nativeBytes(), n0, 'native bytes flat');
  t.ok(last < first * 0.5, `the loss falls (${first.toFixed(3)} -> ${last.toFixed(3)})`);
  tf.dispose([w, xs, ys]);
  opt.dispose();
});

t.test('bad input is a JS error, not a crash', async (t) => {
  const s = tf.tensor1d(['a', 'b'], 'string');
  t.throws(() => tf.exp(s as unknown as tf.Tensor), /string/);
  s.dispose();
  const x = tf.ones([1, 4, 4, 1]);
  t.throws(() => tf.engine().runKernel('MaxPool', { x }, { filterSize: 0, strides: 1, pad: 'valid' }));
  x.dispose();
});

t.test('data moves in from another backend (KernelBackend.move) and out again', async (t) => {
  await tf.setBackend('cpu');
  const a = tf.tensor1d([1, 2, 3]);
  await tf.setBackend(BACKEND_NAME);
  const b = tf.tensor1d([10, 20, 30]);
  const c = tf.add(a, b); // a's data moves to llava first
  t.same(Array.from(c.dataSync()), [11, 22, 33]);
  await tf.setBackend('cpu');
  t.same(Array.from(tf.mul(c, 2).dataSync()), [22, 44, 66], 'and back to cpu');
  await tf.setBackend(BACKEND_NAME);
  tf.dispose([a, b, c]);
});
