// layers.test.ts — tfjs-layers models train on the `llava` backend exactly as on tfjs-backend-cpu:
// a small text model (embedding -> layerNormalization -> dense -> softmax) and a small CNN
// (conv2d -> batchNormalization -> maxPooling2d -> dense), 50 Adam steps each from the same initial
// weights on the same batch; every loss of the curve must agree within a relative 1e-4.
// The learning rate (0.002) keeps the loss of order 1 over the 50 steps: near zero, a relative
// comparison would measure float32 rounding in the softmax rather than the kernels.
import t from 'tap';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-core/dist/register_all_gradients';
import * as tfl from '@tensorflow/tfjs-layers';
import { BACKEND_NAME } from '../../lib/tfjs';
import { rng } from '../helpers';

const STEPS = 50;

function textModel(): tfl.LayersModel {
  const m = tfl.sequential();
  m.add(tfl.layers.embedding({ inputDim: 24, outputDim: 16, inputLength: 6 }));
  m.add(tfl.layers.layerNormalization());
  m.add(tfl.layers.flatten());
  m.add(tfl.layers.dense({ units: 24, activation: 'softmax' }));
  return m;
}

function cnn(): tfl.LayersModel {
  const m = tfl.sequential();
  m.add(tfl.layers.conv2d({ inputShape: [8, 8, 2], filters: 4, kernelSize: 3, padding: 'same', activation: 'relu' }));
  m.add(tfl.layers.batchNormalization());
  m.add(tfl.layers.maxPooling2d({ poolSize: 2 }));
  m.add(tfl.layers.flatten());
  m.add(tfl.layers.dense({ units: 4, activation: 'softmax' }));
  return m;
}

interface Batch {
  x: { values: number[]; shape: number[]; dtype: 'int32' | 'float32' };
  y: { values: number[]; shape: number[] };
}

function textBatch(): Batch {
  const r = rng(7);
  const B = 8;
  const ids = Array.from({ length: B * 6 }, () => Math.floor(r() * 24));
  const y = new Array(B * 24).fill(0);
  for (let b = 0; b < B; b++) y[b * 24 + ids[b * 6 + 5]] = 1; // predict the last token
  return { x: { values: ids, shape: [B, 6], dtype: 'int32' }, y: { values: y, shape: [B, 24] } };
}

function imageBatch(): Batch {
  const r = rng(11);
  const B = 4;
  const x = Array.from({ length: B * 8 * 8 * 2 }, () => r() * 2 - 1);
  const y = new Array(B * 4).fill(0);
  for (let b = 0; b < B; b++) y[b * 4 + (b % 4)] = 1;
  return { x: { values: x, shape: [B, 8, 8, 2], dtype: 'float32' }, y: { values: y, shape: [B, 4] } };
}

/** Train on `backend` from `weights` (or the model's own initial weights); returns the loss curve. */
async function curve(backend: string, make: () => tfl.LayersModel, batch: Batch, weights?: Float32Array[]) {
  await tf.setBackend(backend);
  const model = make();
  if (weights) model.setWeights(model.getWeights().map((w, i) => tf.tensor(weights[i], w.shape)));
  const init = model.getWeights().map((w) => w.dataSync() as Float32Array);
  model.compile({ optimizer: tf.train.adam(0.002), loss: 'categoricalCrossentropy' });
  const x = tf.tensor(batch.x.values, batch.x.shape, batch.x.dtype);
  const y = tf.tensor(batch.y.values, batch.y.shape);
  const losses: number[] = [];
  for (let i = 0; i < STEPS; i++) losses.push((await model.trainOnBatch(x, y)) as number);
  tf.dispose([x, y]);
  model.dispose();
  return { losses, init };
}

function compare(t: { ok(c: boolean, m: string): void }, ref: number[], got: number[]): void {
  let worst = 0;
  for (let i = 0; i < ref.length; i++) worst = Math.max(worst, Math.abs(got[i] - ref[i]) / Math.abs(ref[i]));
  t.ok(worst <= 1e-4, `worst relative difference over ${ref.length} steps: ${worst.toExponential(2)}`);
  t.ok(got[got.length - 1] < got[0] * 0.9, `the loss falls (${got[0].toFixed(4)} -> ${got[got.length - 1].toFixed(4)})`);
}

for (const [name, make, batch] of [
  ['text model (embedding, layerNormalization, dense, softmax)', textModel, textBatch()],
  ['CNN (conv2d, batchNormalization, maxPooling2d, dense)', cnn, imageBatch()],
] as const) {
  t.test(`${name}: same loss curve on llava as on cpu`, async (t) => {
    const cpu = await curve('cpu', make, batch);
    const ours = await curve(BACKEND_NAME, make, batch, cpu.init);
    compare(t, cpu.losses, ours.losses);
  });
}
