// tfjs_cases.ts — TensorFlow.js through `tf.*` on three backends in one run: `llava` (this
// package, lib/tfjs), tfjs-backend-cpu (plain JS) and tfjs-backend-wasm (XNNPACK, SIMD), the same
// graph with the same inputs on each. One JSON line per case and backend pair: the llava time, the
// peer's time, ratio = peer_ms / llava_ms (> 1: llava is faster).
//
// Cases: matMul 1024³; conv2d 1x224x224x32 -> 64 3x3 'same'; a tfjs-layers transformer-ish block
// (layerNorm, dense 4C relu, dense C, residual, layerNorm on B4 T64 C128) forward + backward; and a
// MobileNet-shaped CNN forward (conv 3x3/2, four depthwise-separable blocks, global pool, dense 1000)
// on 1x224x224x3. Timings: one warm-up call, then the median of `samples` calls, each in tf.tidy.
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import '@tensorflow/tfjs-backend-wasm';
import * as tfl from '@tensorflow/tfjs-layers';
import '../lib/tfjs';
import { BenchOptions, emit, round } from './harness';

// tfjs-core ships its gradients only as ES modules (the @tensorflow/tfjs bundle registers them for
// apps); the compiled bench is CommonJS, so tsx's require hook loads them.
require('tsx/cjs');
require('@tensorflow/tfjs-core/dist/register_all_gradients');

const BACKENDS = ['llava', 'cpu', 'wasm'] as const;

interface TfjsCase {
  op: string;
  shape: string;
  flops: number;
  /**
   * Builds the inputs on the current backend; returns the call to time (it must return nothing: tf.tidy
   * walks whatever it returns, and a 1M-element array takes seconds to walk) and a cleanup.
   */
  setup(): { run: () => void; dispose: () => void };
}

function rand(shape: number[], seed: number): tf.Tensor {
  return tf.randomUniform(shape, -1, 1, 'float32', seed);
}

function transformerBlock(C: number): tfl.LayersModel {
  const x = tfl.input({ shape: [64, C] });
  const h = tfl.layers.layerNormalization().apply(x) as tfl.SymbolicTensor;
  const u = tfl.layers.dense({ units: 4 * C, activation: 'relu' }).apply(h) as tfl.SymbolicTensor;
  const d = tfl.layers.dense({ units: C }).apply(u) as tfl.SymbolicTensor;
  const r = tfl.layers.add().apply([x, d]) as tfl.SymbolicTensor;
  const y = tfl.layers.layerNormalization().apply(r) as tfl.SymbolicTensor;
  return tfl.model({ inputs: x, outputs: y });
}

function mobilenetish(): tfl.LayersModel {
  const m = tfl.sequential();
  m.add(tfl.layers.conv2d({ inputShape: [224, 224, 3], filters: 32, kernelSize: 3, strides: 2, padding: 'same', activation: 'relu' }));
  for (const [filters, strides] of [
    [64, 1],
    [128, 2],
    [128, 1],
    [256, 2],
  ]) {
    m.add(tfl.layers.depthwiseConv2d({ kernelSize: 3, strides, padding: 'same', activation: 'relu' }));
    m.add(tfl.layers.conv2d({ filters, kernelSize: 1, activation: 'relu' }));
  }
  m.add(tfl.layers.globalAveragePooling2d({}));
  m.add(tfl.layers.dense({ units: 1000, activation: 'softmax' }));
  return m;
}

const CASES: TfjsCase[] = [
  {
    op: 'tfjs_matMul',
    shape: '1024x1024x1024',
    flops: 2 * 1024 ** 3,
    setup() {
      const a = rand([1024, 1024], 1),
        b = rand([1024, 1024], 2);
      return { run: () => void tf.matMul(a, b).dataSync(), dispose: () => tf.dispose([a, b]) };
    },
  },
  {
    op: 'tfjs_conv2d',
    shape: '1x224x224x32->64 3x3',
    flops: 2 * 224 * 224 * 64 * 9 * 32,
    setup() {
      const x = rand([1, 224, 224, 32], 3),
        w = rand([3, 3, 32, 64], 4);
      return { run: () => void tf.conv2d(x as tf.Tensor4D, w as tf.Tensor4D, 1, 'same').dataSync(), dispose: () => tf.dispose([x, w]) };
    },
  },
  {
    op: 'tfjs_transformer_block_fwd_bwd',
    shape: 'B4 T64 C128',
    flops: 3 * 2 * 4 * 64 * (128 * 512 * 2),
    setup() {
      const model = transformerBlock(128);
      const x = rand([4, 64, 128], 5);
      return {
        run: () => {
          const { value, grads } = tf.variableGrads(() => tf.mean(tf.square(model.apply(x, { training: true }) as tf.Tensor)) as tf.Scalar);
          value.dataSync();
          tf.dispose(Object.values(grads));
        },
        dispose: () => {
          x.dispose();
          model.dispose();
        },
      };
    },
  },
  {
    op: 'tfjs_mobilenet_like_fwd',
    shape: '1x224x224x3',
    flops: 0,
    setup() {
      const model = mobilenetish();
      const x = rand([1, 224, 224, 3], 6);
      return {
        run: () => void (model.predict(x) as tf.Tensor).dataSync(),
        dispose: () => {
          x.dispose();
          model.dispose();
        },
      };
    },
  },
];

function timeCase(c: TfjsCase, samples: number): number {
  const { run, dispose } = c.setup();
  try {
    tf.tidy(run); // warm-up (kernels, wasm code, lazily built weights)
    const ts: number[] = [];
    for (let i = 0; i < samples; i++) {
      const t0 = process.hrtime.bigint();
      tf.tidy(run);
      ts.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
    ts.sort((p, q) => p - q);
    return ts[Math.floor(ts.length / 2)];
  } finally {
    dispose();
  }
}

/** Run the tfjs cases (selected by --filter on `op shape`) on llava, cpu and wasm. */
export async function runTfjsCases(opts: BenchOptions): Promise<void> {
  const cases = CASES.filter((c) => !opts.filter || opts.filter.test(`${c.op} ${c.shape}`));
  if (!cases.length) return;
  const samples = opts.quick ? 2 : 5;
  const ms: Record<string, Record<string, number>> = {};
  for (const backend of BACKENDS) {
    if (!(await tf.setBackend(backend))) {
      emit({ op: 'tfjs', skipped: `backend ${backend} failed to initialise` });
      continue;
    }
    await tf.ready();
    for (const c of cases) {
      // tfjs-backend-cpu is 1-2 orders slower: fewer samples keep the run short.
      (ms[c.op] ??= {})[backend] = timeCase(c, backend === 'cpu' ? Math.min(samples, 3) : samples);
    }
  }
  for (const c of cases) {
    const m = ms[c.op];
    if (!m?.llava) continue;
    for (const peer of ['cpu', 'wasm'] as const) {
      if (!m[peer]) continue;
      emit({
        op: c.op,
        scenario: `tfjs ${c.shape}`,
        dtype: 'float32',
        device: 'cpu',
        shape: c.shape,
        median_ms: round(m.llava),
        ...(c.flops ? { gflops: round(c.flops / (m.llava / 1e3) / 1e9) } : {}),
        baseline: `tfjs-backend-${peer} ${tf.version_core}`,
        baseline_ms: round(m[peer]),
        ratio: round(m[peer] / m.llava, 3),
        samples,
      });
    }
  }
  await tf.setBackend('llava');
}
