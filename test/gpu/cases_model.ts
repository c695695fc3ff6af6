// cases_model.ts — the tiny LLaVA fixture on the device under test against transformers' float64
// reference (test/fixtures/tiny-llava): logits at attended positions, the stage-2 loss and all 25
// gradients, with the tolerances of test/models/llava_model.test.ts (float32 maths vs float64: atol 3e-5 /
// rtol 1e-4 on logits, 1e-5 on the loss, atol 1e-6 / rtol 1e-3 on gradients). A bf16 run of the same
// model is held to the flash-attention rule against the CPU: its error vs the reference must be at
// most 2x the CPU bf16 engine's error (plus one bf16 rounding of the largest value).
import * as L from '../../lib';
import { loadLlava } from '../../lib/models/loader';
import { LlavaForConditionalGeneration } from '../../lib/models/llava';
import { KVCache } from '../../lib/models/llama';
import { fixtureDir, readInts, tinyLlavaRef } from './fixture';
import { EPS, OutputStat, Outputs, ParityCase, compare, f64, maxAbs, maxAbsErr } from './parity';

/** Logits (attended rows only), stage-2 loss and every stage-2 gradient for a model on `dev`. */
function modelOutputs(dev: L.Device, dtype: L.DType): Outputs {
  const r = tinyLlavaRef();
  const model: LlavaForConditionalGeneration = loadLlava(fixtureDir(), { device: dev, dtype });
  const batch = r.batch(dev, dtype);
  try {
    const out: Outputs = {};
    const V = model.config.text.vocab_size;
    const flatMask = r.mask.flat();
    L.tidy(() => {
      const logits = f64(L.noGrad(() => model.forward(batch).logits));
      const kept: number[] = [];
      for (let i = 0; i < logits.length; i++) if (flatMask[Math.floor(i / V)] === 1) kept.push(logits[i]);
      out.logits = Float64Array.from(kept);
    });
    model.setStage(2);
    L.tidy(() => {
      const { loss } = model.loss(batch);
      loss.backward();
      out.loss = f64(loss);
    });
    for (const [name, p] of model.namedParameters()) if (p.grad) out[`grad.${name}`] = f64(p.grad);
    return out;
  } finally {
    batch.pixelValues?.dispose();
    model.dispose();
  }
}

function referenceOutputs(): Outputs {
  const r = tinyLlavaRef();
  const out: Outputs = {};
  const flatMask = r.mask.flat();
  const logits = r.refF('logits');
  const V = logits.length / flatMask.length;
  out.logits = Float64Array.from(Array.from(logits).filter((_, i) => flatMask[Math.floor(i / V)] === 1));
  out.loss = Float64Array.from(r.refF('stage2.loss'));
  for (const n of r.ref.names()) if (n.startsWith('stage2.grad.')) out[`grad.${n.slice('stage2.grad.'.length)}`] = Float64Array.from(r.refF(n));
  return out;
}

const tolFor = (k: string): { atol: number; rtol: number } =>
  k === 'logits' ? { atol: 3e-5, rtol: 1e-4 } : k === 'loss' ? { atol: 1e-5, rtol: 0 } : { atol: 1e-6, rtol: 1e-3 };

/** Greedy decoding of `rows` together (left-padded, as generateBatch) or one row at a time: the logits
 *  of every step, row after row, and the ids. */
function greedyLogits(model: LlavaForConditionalGeneration, rows: number[][], pixels: (L.Tensor | null)[], steps: number, batched: boolean) {
  const logits: number[][] = rows.map(() => []); // row by row, step by step, whichever way they ran
  const ids: number[][] = rows.map(() => []);
  const V = model.config.text.vocab_size;
  const take = (lg: L.Tensor, b0: number): number[] => {
    const h = f64(lg);
    lg.dispose();
    const toks: number[] = [];
    for (let b = 0; b * V < h.length; b++) {
      const row = Array.from(h.subarray(b * V, (b + 1) * V));
      logits[b0 + b].push(...row);
      const t = row.indexOf(Math.max(...row));
      ids[b0 + b].push(t);
      toks.push(t);
    }
    return toks;
  };
  if (batched) {
    const images = pixels.filter((p): p is L.Tensor => !!p);
    const all = images.length ? L.keep(L.cat(images, 0)) : null;
    const pre = model.prefillBatch(rows, all, Math.max(...rows.map((r) => r.length)) + 16 * steps);
    all?.dispose();
    let toks = take(pre.logits, 0);
    for (let i = 1; i < steps; i++) {
      for (const m of pre.keyMask) m.push(1);
      toks = take(
        model.decodeStepBatch(
          toks,
          pre.lengths.map((l) => l + i - 1),
          pre.cache,
          pre.keyMask,
        ),
        0,
      );
    }
    pre.cache.dispose();
  } else
    rows.forEach((r, b) => {
      const pre = model.prefill(r, pixels[b], r.length + 16 * steps);
      let [tok] = take(pre.logits, b);
      for (let i = 1; i < steps; i++) [tok] = take(model.decodeStep(tok, pre.length + i - 1, pre.cache), b);
      pre.cache.dispose();
    });
  return { logits: Float64Array.from(logits.flat()), ids };
}

/** A decode step of two left-padded rows and a 17-position prompt's prefill, in one forward (`joint`:
 *  the step beside the prompt's first 5 columns) or each alone: the step's logits, then the prompt's. */
function packedLogits(dev: L.Device, joint: boolean): Float64Array {
  const model = loadLlava(fixtureDir(), { device: dev });
  const ids = (n: number, k: number): number[] => Array.from({ length: n }, (_, i) => 3 + ((i * k) % 60));
  try {
    const pre = model.prefillBatch([ids(9, 7), ids(6, 11)], null, 16);
    const V = pre.logits.shape[1];
    const last = f64(pre.logits);
    pre.logits.dispose();
    const step = {
      tokens: [0, 1].map((b) => Array.from(last.subarray(b * V, (b + 1) * V)).reduce((m, x, i, a) => (x > a[m] ? i : m), 0)),
      positions: pre.lengths,
      cache: pre.cache,
      keyMask: pre.keyMask.map((m) => [...m, 1]),
    };
    const run = model.startPrefill([ids(17, 5)], null, 20);
    let stepLogits: L.Tensor;
    if (joint) {
      const both = run.nextWithStep(5, step);
      stepLogits = both.step;
    } else stepLogits = model.decodeStepBatch(step.tokens, step.positions, step.cache, step.keyMask);
    const prompt = run.next()!;
    const out = Float64Array.from([...f64(stepLogits), ...f64(prompt)]);
    [stepLogits, prompt].forEach((x) => x.dispose());
    run.dispose();
    run.cache.dispose();
    pre.cache.dispose();
    return out;
  } finally {
    model.dispose();
  }
}

export function modelCases(): ParityCase[] {
  return [
    {
      group: 'model',
      name: 'tiny-llava f32: logits, stage-2 loss and 25 gradients vs the transformers reference',
      evaluate(dev) {
        const got = modelOutputs(dev, 'float32');
        const ref = referenceOutputs();
        const stats: Record<string, OutputStat> = {};
        let pass = true;
        for (const k of Object.keys(ref)) {
          if (!got[k]) {
            stats[k] = { n: ref[k].length, bad: ref[k].length, maxAbs: Infinity, maxRel: Infinity, nmse: Infinity, worst: 'no gradient' };
            pass = false;
            continue;
          }
          stats[k] = compare(got[k], ref[k], tolFor(k));
          if (stats[k].bad) pass = false;
        }
        const extra = Object.keys(got).filter((k) => !ref[k]);
        if (extra.length) pass = false;
        return {
          pass,
          stats,
          detail: `${Object.keys(ref).length - 2} gradients checked${extra.length ? `; unexpected gradients: ${extra.join(', ')}` : ''}`,
        };
      },
    },
    {
      group: 'model',
      name: 'tiny-llava f32: batched greedy decoding of left-padded prompts (generateBatch) vs one row at a time, and vs the CPU',
      evaluate(dev, refDev) {
        const r = tinyLlavaRef();
        const prompt = readInts(r.ref, 'greedy.prompt_ids');
        const run = (d: L.Device, batched: boolean) => {
          const model = loadLlava(fixtureDir(), { device: d });
          const pix = L.keep(L.tensor(r.refF('image0.pixel_values'), { shape: [1, 3, 28, 28], device: d }));
          const text = prompt.filter((id) => id !== model.config.imageTokenIndex).slice(0, 9);
          try {
            return greedyLogits(model, [prompt, text, prompt.slice(0, prompt.length - 3)], [pix, null, pix], 6, batched);
          } finally {
            pix.dispose();
            model.dispose();
          }
        };
        const batched = run(dev, true);
        const single = run(dev, false);
        const cpu = run(refDev, true);
        const tol = { atol: 3e-5, rtol: 1e-4 };
        const stats = {
          'batched vs one row (device)': compare(batched.logits, single.logits, tol),
          'device vs cpu (batched)': compare(batched.logits, cpu.logits, tol),
        };
        const sameIds = JSON.stringify(batched.ids) === JSON.stringify(single.ids) && JSON.stringify(batched.ids) === JSON.stringify(cpu.ids);
        return {
          pass: sameIds && Object.values(stats).every((st) => st.bad === 0),
          stats,
          detail: `3 rows x 6 greedy steps; ids ${sameIds ? 'equal' : `differ: ${JSON.stringify(batched.ids)} vs ${JSON.stringify(single.ids)} / cpu ${JSON.stringify(cpu.ids)}`}`,
        };
      },
    },
    {
      group: 'model',
      name: 'KVCache.gather (continuous batching): rows of two caches, right-aligned in a new one, exactly as on the CPU',
      evaluate(dev, refDev) {
        const run = (d: L.Device): Float64Array => {
          const make = (B: number, len: number, seed: number): KVCache => {
            const c = new KVCache(2, B, 2, 9, 8, 'float32', d);
            c.length = len;
            L.tidy(() =>
              [...c.k, ...c.v].forEach((x, n) =>
                L.copyInto(
                  x,
                  L.tensor(
                    Array.from({ length: x.numel }, (_, i) => Math.sin(seed * 1e4 + n * 1e3 + i)),
                    { shape: x.shape, device: d },
                  ),
                ),
              ),
            );
            return c;
          };
          const a = make(3, 7, 1);
          const b = make(2, 4, 2);
          const g = KVCache.gather(
            [
              { cache: a, rows: [2, 0] },
              { cache: b, rows: [1, 0] },
            ],
            6,
            9,
          );
          try {
            return Float64Array.from([...g.k, ...g.v].flatMap((x) => Array.from(f64(x))));
          } finally {
            [a, b, g].forEach((c) => c.dispose());
          }
        };
        const got = run(dev);
        const want = run(refDev);
        const stats = { 'k and v': compare(got, want, { atol: 0, rtol: 0 }) };
        return { pass: stats['k and v'].bad === 0, stats, detail: '2 layers, 4 rows from caches of 7 and 4 columns into 6 of 9' };
      },
    },
    {
      group: 'model',
      name: 'tiny-llava f32: a prefill chunk in one forward with a decode step (hiddenPacked, chunked prefill) vs each alone, and vs the CPU',
      evaluate(dev, refDev) {
        const got = packedLogits(dev, true);
        const alone = packedLogits(dev, false);
        const cpu = packedLogits(refDev, true);
        const tol = { atol: 3e-5, rtol: 1e-4 };
        const stats = { 'vs alone on the device': compare(got, alone, tol), 'vs the CPU': compare(got, cpu, tol) };
        return {
          pass: Object.values(stats).every((st) => st.bad === 0),
          stats,
          detail: 'a 2-row decode step (left-padded, masked) beside the first 5 columns of a 17-position prompt, then the rest',
        };
      },
    },
    {
      group: 'model',
      name: 'tiny-llava bf16: logits, loss, gradients within 2x the CPU bf16 error',
      evaluate(dev, refDev) {
        const ref = referenceOutputs();
        const got = modelOutputs(dev, 'bfloat16');
        const cpu = modelOutputs(refDev, 'bfloat16');
        const stats: Record<string, OutputStat> = {};
        let pass = true;
        let worstRatio = 0;
        for (const k of Object.keys(ref)) {
          if (!got[k] || !cpu[k]) {
            pass = false;
            stats[k] = { n: ref[k].length, bad: 1, maxAbs: Infinity, maxRel: Infinity, nmse: Infinity, worst: 'missing' };
            continue;
          }
          const ed = maxAbsErr(got[k], ref[k]);
          const ec = maxAbsErr(cpu[k], ref[k]);
          const floor = EPS.bfloat16 * maxAbs(ref[k]);
          const ok = ed <= 2 * ec + floor;
          worstRatio = Math.max(worstRatio, ed / Math.max(ec, 1e-30));
          if (!ok) pass = false;
          stats[k] = {
            n: ref[k].length,
            bad: ok ? 0 : 1,
            maxAbs: ed,
            maxRel: ed / Math.max(maxAbs(ref[k]), 1e-30),
            nmse: NaN,
            ...(ok ? {} : { worst: `device err ${ed.toExponential(2)} > 2 x cpu ${ec.toExponential(2)} + ${floor.toExponential(1)}` }),
          };
        }
        return { pass, stats, detail: `worst device/cpu error ratio ${worstRatio.toFixed(2)}` };
      },
    },
  ];
}
