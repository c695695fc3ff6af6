// decode_cases.ts — greedy decode speed of a LLaMA-shaped language model with its decoder linears stored as
// float32, bfloat16, int8 (per channel) or NF4 (blocks of 64): what --load-8bit / --load-4bit buy at T = 1,
// where every step streams each weight once and the dequantizing GEMV (quant_matmul) reads 1/4 (int8) or
// ~1/7 (NF4, with its f32 block scales) of the float32 bytes. The baseline is the float32 model in the same
// run (ratio > 1: faster than float32).
//
// Shape: LLaMA-7B's proportions at half width (C 2048, I 5504, 16 heads of 128, vocab 4096 so lm_head does
// not dominate), 2 layers (1 with --quick). Weights are random (N(0, 0.02)); the token chosen each step is
// the argmax of the logits, fed back with a KV cache: 1 prompt token then `steps` decode steps.
import * as L from '../lib';
import { LlamaForCausalLM } from '../lib/models/llama';
import { quantizeLinear, linearLayers } from '../lib/nn/lora';
import { type BenchOptions, type CaseRecord, emit, report, selected, timeIt, round } from './harness';

const dev = 'cpu' as const;

/** LLaMA sizes of a decode case: width, MLP width, heads, vocabulary. */
export interface DecodeDims {
  C: number;
  I: number;
  H: number;
  V: number;
}
const HALF_7B: DecodeDims = { C: 2048, I: 5504, H: 16, V: 4096 };

export function build(layers: number, d: DecodeDims = HALF_7B): LlamaForCausalLM {
  const m = new LlamaForCausalLM({
    vocab_size: d.V,
    hidden_size: d.C,
    intermediate_size: d.I,
    num_hidden_layers: layers,
    num_attention_heads: d.H,
    rms_norm_eps: 1e-6,
    max_position_embeddings: 2048,
  });
  randomInit(m);
  return m;
}

/** N(0, 0.02) weights (norms left at one), seeded, and no gradients: a model to time, not to train. */
export function randomInit(m: L.nn.Module): void {
  L.noGrad(() => {
    let seed = 1;
    for (const [n, p] of m.namedParameters()) {
      if (/norm/.test(n)) continue;
      const r = L.mul(L.randn(p.shape, { generator: new L.Generator(seed++) }), 0.02);
      L.copyInto(p, r);
      r.dispose();
    }
  });
  m.requiresGrad(false);
}

/** One greedy decode of `steps` tokens after a 1-token prompt; returns the ids. */
export function decode(m: LlamaForCausalLM, steps: number): number[] {
  return decodeRows(m, steps, 1)[0];
}

/** Greedy decoding of B rows at once after the same 1-token prompt (one cache of B rows, each row's own
 *  argmax); the ids of every row. */
export function decodeRows(m: LlamaForCausalLM, steps: number, B: number): number[][] {
  return L.noGrad(() => {
    const cache = m.newCache(B, steps + 2);
    const ids: number[][] = Array.from({ length: B }, () => []);
    let toks = new Array<number>(B).fill(1);
    try {
      for (let pos = 0; pos <= steps; pos++) {
        toks = L.tidy(() => {
          const e = m.embedTokens(L.fromValues(toks, [B, 1], 'int64', dev));
          const h = m.hidden(
            e,
            toks.map(() => [pos]),
            null,
            cache,
          );
          return L.argmax(L.reshape(m.logits(h), [B, -1]), 1).toNumbers();
        });
        toks.forEach((t, b) => ids[b].push(t));
      }
    } finally {
      cache.dispose();
    }
    return ids;
  });
}

/** B rows decoded together (what generateBatch does per step) against B one-row decodes in the same run:
 *  each step reads every weight once for the whole batch, so at small B it costs little more than one row. */
function batchedDecodeCase(o: BenchOptions, maxMs: number, layers: number, steps: number): void {
  const B = 4;
  const rec = (b: number): CaseRecord => ({
    op: 'llama_batched_decode',
    scenario: `llama7b_decode half width (C 2048, I 5504, ${layers} layers, vocab 4096), float32, ${b} row(s) per step`,
    dtype: 'float32',
    device: dev,
    shape: `B${b} x T1 x ${steps} steps`,
  });
  if (!selected(o, rec(B))) return;
  const m = build(layers);
  try {
    const one = timeIt(() => decode(m, steps), { device: dev, warmup: 1, reps: o.quick ? 3 : 5, maxMs });
    report(rec(1), one, 'tokens', steps + 1, null);
    const same = decodeRows(m, steps, 2);
    if (same[0].join() !== decode(m, steps).join() || same[1].join() !== same[0].join())
      throw new Error('llama_batched_decode: batched rows differ from one-row decoding');
    const many = timeIt(() => decodeRows(m, steps, B), { device: dev, warmup: 1, reps: o.quick ? 3 : 5, maxMs });
    report(rec(B), many, 'tokens', B * (steps + 1), { name: `${B} one-row decodes (same run)`, ms: B * one.median_ms });
  } finally {
    m.dispose();
  }
}

export function decodeCases(o: BenchOptions, maxMs: number): void {
  const layers = o.quick ? 1 : 2;
  const steps = o.quick ? 8 : 16;
  const kinds = ['float32', 'bfloat16', 'int8', 'nf4'] as const;
  const rec = (k: string): CaseRecord => ({
    op: 'llama_greedy_decode',
    scenario: `llama7b_decode half width (C 2048, I 5504, ${layers} layers, vocab 4096), decoder linears ${k}`,
    dtype: k === 'int8' || k === 'nf4' ? `float32 activations, ${k} weights` : k,
    device: dev,
    shape: `T1 x ${steps} steps`,
  });
  if (kinds.some((k) => selected(o, rec(k)))) quantizedDecodeCases(kinds, rec, layers, steps, o, maxMs);
  batchedDecodeCase(o, maxMs, layers, steps);
}

function quantizedDecodeCases(
  kinds: readonly ('float32' | 'bfloat16' | 'int8' | 'nf4')[],
  rec: (k: string) => CaseRecord,
  layers: number,
  steps: number,
  o: BenchOptions,
  maxMs: number,
): void {
  let baseMs: number | null = null;
  for (const k of kinds) {
    const m = build(layers);
    try {
      if (k === 'bfloat16') m.to('bfloat16');
      if (k === 'int8' || k === 'nf4') for (const [p, l] of linearLayers(m)) if (p !== 'lm_head') quantizeLinear(l, k);
      const bytes =
        m.namedParameters().reduce((a, [, p]) => a + p.numel * (p.dtype === 'bfloat16' ? 2 : 4), 0) +
        linearLayers(m).reduce((a, [, l]) => a + (l.quantized?.nbytes ?? 0), 0);
      const t = timeIt(() => decode(m, steps), { device: dev, warmup: 1, reps: o.quick ? 3 : 5, maxMs });
      if (k === 'float32') baseMs = t.median_ms;
      report(rec(k), t, 'tokens', steps + 1, k === 'float32' ? null : { name: 'float32 weights (same run)', ms: baseMs }, {
        weight_mib: round(bytes / 2 ** 20, 4),
      });
    } finally {
      m.dispose();
    }
  }
  if (baseMs === null) emit({ note: 'llama_greedy_decode: float32 baseline not selected, no ratios' });
}
