// verify.ts — `llava verify`: recompute what a reference file holds with this engine and compare.
//
// The reference is a safetensors file in the layout of test/fixtures/tiny-llava/reference.safetensors.
// Inputs: `pixel_values` [N,3,S,S], `input_ids`, `attention_mask`, `labels` [B,T] (int). Expected values,
// each optional: `vision_select_features`, `vision_last_hidden_state`, `image_features`, `logits` (compared
// where attention_mask is 1), `stage{1,2}.loss`, `stage{1,2}.grad.<param>` (and: every other parameter must
// get no gradient in that stage), `greedy.prompt_ids` → `greedy.output_ids` (exact, through `generate` with
// the KV cache), `adamw2.<param>` (projector weights after two AdamW steps applying the stage-1 gradient,
// with the fixture's hyperparameters; run last since it changes the weights).
//
// An element passes when |a − e| <= atol + rtol·|e| (NaN fails). Defaults: float32 atol 1e-4, rtol 1e-3
// (the fixture README: f32 maths vs the float64 reference lands within ~1e-4 relative); bfloat16 and
// float16 run every matmul in 8/11-bit mantissas, so their defaults are looser (see DEFAULT_TOL) and the
// table says so. Greedy ids in low precision may legitimately diverge; they are still compared exactly.
import * as fs from 'fs';
import { Tensor } from '../../core/tensor';
import { keep, tidy } from '../../core/memory';
import { noGrad } from '../../core/autograd';
import { tensor } from '../../ops/creation';
// The ops index binds Tensor's methods (dataSync's contiguous copy): `llava verify` loads nothing else that does.
import '../../ops';
import { narrow } from '../../ops/view';
import type { DType, Device } from '../../core/dtype';
import { SafetensorsFile, typedView, SafetensorsDtype } from '../../io/safetensors';
import { LlavaForConditionalGeneration } from '../../models/llava';
import { AdamW } from '../../optim/adamw';
import { Tokenizer } from '../processing/tokenizer';
import { generate } from './generate';
import { LlavaSession, modelLoadOptions } from '../processing/session';
import { checkRuntime } from '../util/runtime';
import { IMAGE_TOKEN_INDEX } from '../../constants';

export interface VerifyOptions {
  /** Model directory (llava-hf or original layout). */
  model: string;
  /** Reference safetensors file. */
  reference: string;
  atol?: number;
  rtol?: number;
  device?: string;
  dtype?: string;
  /** Write the results as JSON to this path. */
  out?: string;
  /** CLIP directory for original llava_llama checkpoints. */
  visionTower?: string;
  /** LoRA adapter in `model` over this base; int8 / NF4 language model (session.ts WeightOptions). */
  modelBase?: string;
  load8bit?: boolean;
  load4bit?: boolean;
  /** Where table lines go (default: stdout). */
  log?: (line: string) => void;
}

export interface CheckRow {
  name: string;
  shape: number[];
  maxAbsErr: number | null;
  maxRelErr: number | null;
  ok: boolean;
  note?: string;
}

export const DEFAULT_TOL: Record<string, { atol: number; rtol: number }> = {
  float32: { atol: 1e-4, rtol: 1e-3 },
  float16: { atol: 2e-2, rtol: 2e-2 },
  bfloat16: { atol: 1e-1, rtol: 5e-2 },
};

/** The AdamW settings the tiny-llava fixture used for `adamw2.*`. */
export const FIXTURE_ADAMW = { lr: 2e-3, betas: [0.9, 0.999] as [number, number], eps: 1e-8, weightDecay: 0.01 };

function readInts(ref: SafetensorsFile, name: string): { values: number[]; shape: number[] } {
  const r = ref.read(name);
  const dt = r.dtype as SafetensorsDtype;
  if (!['I64', 'I32', 'I16', 'I8', 'U8'].includes(dt)) throw new Error(`[verify] reference '${name}' must be an integer tensor (is ${dt})`);
  const v = typedView(dt, r.data);
  return { values: Array.from(v as ArrayLike<number | bigint>, Number), shape: r.shape };
}

function rowsOf(values: number[], shape: number[], name: string): number[][] {
  if (shape.length === 1) return [values];
  if (shape.length !== 2) throw new Error(`[verify] reference '${name}' must be [B, T] (is [${shape.join(', ')}])`);
  const [B, T] = shape;
  return Array.from({ length: B }, (_, b) => values.slice(b * T, (b + 1) * T));
}

/** Compare `actual` with `expected` elementwise; `keep(i)` limits the compared elements. */
export function compare(
  name: string,
  actual: ArrayLike<number>,
  actualShape: number[],
  expected: ArrayLike<number>,
  expectedShape: number[],
  tol: { atol: number; rtol: number },
  keep?: (i: number) => boolean,
): CheckRow {
  const sameShape = actualShape.length === expectedShape.length && actualShape.every((d, i) => d === expectedShape[i]);
  const scalarLike = actual.length === 1 && expected.length === 1;
  if (!sameShape && !scalarLike)
    return {
      name,
      shape: expectedShape,
      maxAbsErr: null,
      maxRelErr: null,
      ok: false,
      note: `shape [${actualShape.join(', ')}] != expected [${expectedShape.join(', ')}]`,
    };
  let abs = 0;
  let rel = 0;
  let bad = 0;
  let n = 0;
  for (let i = 0; i < expected.length; i++) {
    if (keep && !keep(i)) continue;
    n++;
    const a = actual[i];
    const e = expected[i];
    const d = Math.abs(a - e);
    if (!(d <= tol.atol + tol.rtol * Math.abs(e))) bad++;
    if (Number.isNaN(d)) {
      abs = NaN;
      rel = NaN;
      continue;
    }
    if (!Number.isNaN(abs)) abs = Math.max(abs, d);
    if (!Number.isNaN(rel)) rel = Math.max(rel, e !== 0 ? d / Math.abs(e) : d > 0 ? Infinity : 0);
  }
  return {
    name,
    shape: expectedShape,
    maxAbsErr: abs,
    maxRelErr: rel,
    ok: bad === 0,
    note: bad ? `${bad} of ${n} elements out of tolerance` : undefined,
  };
}

function host(t: Tensor): Float32Array | Float64Array {
  const d = t.dataSync();
  return d instanceof Float32Array || d instanceof Float64Array ? d : Float64Array.from(d as ArrayLike<number>);
}

/** Run every check the reference file supports against a loaded model. Changes the model's weights when
 *  `adamw2.*` is present (checked last). */
export async function verifyModel(
  model: LlavaForConditionalGeneration,
  tokenizer: Tokenizer | null,
  ref: SafetensorsFile,
  tol: { atol: number; rtol: number },
): Promise<{ rows: CheckRow[]; unchecked: string[] }> {
  const rows: CheckRow[] = [];
  const used = new Set<string>();
  const has = (n: string): boolean => ref.has(n);
  const expF = (n: string): Float32Array => {
    used.add(n);
    return ref.readAsFloat32(n);
  };
  const shapeOf = (n: string): number[] => ref.info(n).shape;
  const p0 = model.parameters()[0];
  const dtype: DType = p0.dtype;
  const device: Device = p0.device;
  const check = (name: string, t: Tensor, keep?: (i: number) => boolean): void => {
    rows.push(compare(name, host(t), t.shape, expF(name), shapeOf(name), tol, keep));
  };

  let pixels: Tensor | null = null;
  try {
    if (has('pixel_values')) {
      used.add('pixel_values');
      pixels = keep(tensor(ref.readAsFloat32('pixel_values'), { shape: shapeOf('pixel_values'), dtype, device }));
    }
    const needPixels = (what: string): Tensor => {
      if (!pixels) throw new Error(`[verify] reference has '${what}' but no 'pixel_values'`);
      return pixels;
    };

    // Vision tower and projector.
    noGrad(() =>
      tidy(() => {
        if (has('vision_select_features')) check('vision_select_features', model.visionFeatures(needPixels('vision_select_features')));
        if (has('vision_last_hidden_state')) check('vision_last_hidden_state', model.vision.forward(needPixels('vision_last_hidden_state'), -1));
        if (has('image_features')) check('image_features', model.imageFeatures(needPixels('image_features')));
      }),
    );

    // Batch inputs.
    let ids: number[][] | null = null;
    let mask: number[][] | null = null;
    let labels: number[][] | null = null;
    if (has('input_ids')) {
      used.add('input_ids');
      const r = readInts(ref, 'input_ids');
      ids = rowsOf(r.values, r.shape, 'input_ids');
      if (has('attention_mask')) {
        used.add('attention_mask');
        const m = readInts(ref, 'attention_mask');
        mask = rowsOf(m.values, m.shape, 'attention_mask');
      } else mask = ids.map((r) => r.map(() => 1));
      if (has('labels')) {
        used.add('labels');
        const l = readInts(ref, 'labels');
        labels = rowsOf(l.values, l.shape, 'labels');
      }
    }
    const hasImages = (rowsIds: number[][]): boolean =>
      rowsIds.some((r) => r.some((id) => id === IMAGE_TOKEN_INDEX || id === model.config.imageTokenIndex));
    const batch = () => ({
      inputIds: ids!,
      attentionMask: mask!,
      labels: labels ?? undefined,
      pixelValues: ids && hasImages(ids) ? needPixels('input_ids') : null,
    });

    if (has('logits')) {
      if (!ids) throw new Error("[verify] reference has 'logits' but no 'input_ids'");
      noGrad(() =>
        tidy(() => {
          const { logits } = model.forward(batch());
          const V = logits.shape[2];
          const flat = mask!.flat();
          // Spliced (original-scheme) sequences can differ in length from input_ids; the shape check reports it.
          check('logits', logits, (i) => flat[Math.floor(i / V)] === 1);
        }),
      );
    }

    // Greedy decoding through the streaming API with the KV cache.
    if (has('greedy.output_ids')) {
      used.add('greedy.output_ids');
      const expected = readInts(ref, 'greedy.output_ids').values;
      if (!has('greedy.prompt_ids')) {
        rows.push({
          name: 'greedy.output_ids',
          shape: [expected.length],
          maxAbsErr: null,
          maxRelErr: null,
          ok: false,
          note: "no 'greedy.prompt_ids' in the reference",
        });
      } else if (!tokenizer) {
        rows.push({
          name: 'greedy.output_ids',
          shape: [expected.length],
          maxAbsErr: null,
          maxRelErr: null,
          ok: false,
          note: 'no tokenizer.json in the model directory',
        });
      } else {
        used.add('greedy.prompt_ids');
        const prompt = readInts(ref, 'greedy.prompt_ids').values;
        const nImg =
          prompt.filter((id) => id === IMAGE_TOKEN_INDEX).length ||
          Math.ceil(prompt.filter((id) => id === model.config.imageTokenIndex).length / model.numImageTokens);
        const pix = nImg ? keep(narrow(needPixels('greedy.prompt_ids'), 0, 0, nImg)) : null;
        const got: number[] = [];
        try {
          for await (const piece of generate(model, tokenizer, {
            promptIds: prompt,
            pixelValues: pix,
            maxNewTokens: expected.length,
            temperature: 0,
          }))
            got.push(piece.token);
        } finally {
          pix?.dispose();
        }
        const first = expected.findIndex((e, i) => got[i] !== e);
        const ok = got.length === expected.length && first < 0;
        rows.push({
          name: 'greedy.output_ids',
          shape: [expected.length],
          maxAbsErr: null,
          maxRelErr: null,
          ok,
          note: ok ? 'exact' : `got [${got.join(', ')}], expected [${expected.join(', ')}]` + (first >= 0 ? ` (first difference at ${first})` : ''),
        });
      }
    }

    // Losses and gradients; stage 1 last so its gradients feed the AdamW check.
    for (const stage of [2, 1] as const) {
      const gradNames = ref.names().filter((n) => n.startsWith(`stage${stage}.grad.`));
      if (!has(`stage${stage}.loss`) && !gradNames.length) continue;
      if (!ids || !labels) throw new Error(`[verify] reference has stage${stage} values but no 'input_ids'/'labels'`);
      model.zeroGrad();
      model.setStage(stage);
      const lossT = tidy(() => {
        const { loss } = model.loss(batch());
        if (gradNames.length) loss.backward();
        return loss;
      });
      if (has(`stage${stage}.loss`)) check(`stage${stage}.loss`, lossT);
      lossT.dispose();
      const params = new Map(model.namedParameters());
      const expectedParams = new Set<string>();
      for (const n of gradNames) {
        const pname = n.slice(`stage${stage}.grad.`.length);
        expectedParams.add(pname);
        const p = params.get(pname);
        if (!p) rows.push({ name: n, shape: shapeOf(n), maxAbsErr: null, maxRelErr: null, ok: false, note: 'not a parameter of this model' });
        else if (!p.grad)
          rows.push({ name: n, shape: shapeOf(n), maxAbsErr: null, maxRelErr: null, ok: false, note: 'the parameter got no gradient' });
        else check(n, p.grad);
        used.add(n);
      }
      if (gradNames.length) {
        const leaked = [...params].filter(([n, p]) => !expectedParams.has(n) && p.grad).map(([n]) => n);
        const frozen = params.size - expectedParams.size;
        rows.push({
          name: `stage${stage}.frozen`,
          shape: [frozen],
          maxAbsErr: null,
          maxRelErr: null,
          ok: leaked.length === 0,
          note: leaked.length
            ? `frozen parameters got gradients: ${leaked.slice(0, 5).join(', ')}${leaked.length > 5 ? ` (+${leaked.length - 5} more)` : ''}`
            : `${frozen} frozen parameters, no gradients`,
        });
      }
    }

    // Two AdamW steps with the stage-1 gradients (changes the weights: last).
    const adamNames = ref.names().filter((n) => n.startsWith('adamw2.'));
    if (adamNames.length) {
      const params = new Map(model.namedParameters());
      const targets = adamNames.map((n) => [n, params.get(n.slice('adamw2.'.length))] as const);
      const missingGrad = targets.filter(([, p]) => !p?.grad);
      if (missingGrad.length) {
        for (const [n, p] of missingGrad)
          rows.push({
            name: n,
            shape: shapeOf(n),
            maxAbsErr: null,
            maxRelErr: null,
            ok: false,
            note: p ? 'needs stage1.grad of this parameter in the reference' : 'not a parameter of this model',
          });
        adamNames.forEach((n) => used.add(n));
      } else {
        const opt = new AdamW(
          targets.map(([, p]) => p!),
          FIXTURE_ADAMW,
        );
        opt.stepUpdate();
        opt.stepUpdate();
        opt.dispose();
        for (const [n, p] of targets) check(n, p!);
      }
    }
    model.zeroGrad();
    model.requiresGrad(false);
  } finally {
    pixels?.dispose();
  }
  return { rows, unchecked: ref.names().filter((n) => !used.has(n)) };
}

const fmt = (x: number | null): string => (x === null ? '-' : Number.isNaN(x) ? 'NaN' : x === Infinity ? 'inf' : x.toExponential(2));

/** The results table, one line per check. */
export function formatTable(rows: CheckRow[]): string[] {
  const head = ['name', 'shape', 'max abs err', 'max rel err', 'status'];
  const body = rows.map((r) => [
    r.name,
    `[${r.shape.join(',')}]`,
    fmt(r.maxAbsErr),
    fmt(r.maxRelErr),
    (r.ok ? 'ok' : 'FAIL') + (r.note ? ` (${r.note})` : ''),
  ]);
  const w = head.map((h, c) => Math.max(h.length, ...body.map((b) => (c < 4 ? b[c].length : 0))));
  const line = (cells: string[]): string =>
    cells
      .map((s, c) => (c < 4 ? s.padEnd(w[c]) : s))
      .join('  ')
      .trimEnd();
  return [line(head), line(w.map((n) => '-'.repeat(n)).concat('------')), ...body.map(line)];
}

/** `llava verify`: returns 0 when every check passes, 1 otherwise. Setup problems (missing files, no CUDA,
 *  unusable reference) throw an Error with a message for the user. */
export async function runVerify(o: VerifyOptions): Promise<number> {
  const log = o.log ?? ((s: string) => process.stdout.write(s + '\n'));
  const { device, dtype } = checkRuntime(o.device, o.dtype, { area: 'verify' });
  const def = DEFAULT_TOL[dtype];
  const tol = { atol: o.atol ?? def.atol, rtol: o.rtol ?? def.rtol };
  for (const [k, v] of Object.entries(tol)) if (!(v >= 0)) throw new Error(`[verify] --${k} must be a number >= 0 (got ${v})`);
  if (!fs.existsSync(o.reference)) throw new Error(`[verify] reference file ${o.reference} not found`);
  if (!fs.existsSync(o.model)) throw new Error(`[verify] model directory ${o.model} not found`);
  const ref = SafetensorsFile.open(o.reference);
  let session: LlavaSession | null = null;
  const t0 = Date.now();
  try {
    // Only greedy decoding needs the tokenizer (its row says so when there is none); no images are read.
    session = LlavaSession.load(o.model, { ...modelLoadOptions(o), device, dtype, tokenizer: 'optional', images: false });
    const model = session.model;
    const { rows, unchecked } = await verifyModel(model, session.tokenizerOrNull, ref, tol);
    log(`model ${o.model} (${model.config.format}), ${dtype} on ${device}; reference ${o.reference}`);
    const note =
      dtype === 'float32' ? '' : ` (looser defaults for ${dtype}: float32 uses atol ${DEFAULT_TOL.float32.atol}, rtol ${DEFAULT_TOL.float32.rtol})`;
    log(
      `tolerance: |a - e| <= atol + rtol*|e| with atol ${tol.atol}, rtol ${tol.rtol}${o.atol !== undefined || o.rtol !== undefined ? ' (given)' : note}`,
    );
    log('');
    for (const l of formatTable(rows)) log(l);
    log('');
    if (unchecked.length) log(`not checked: ${unchecked.join(', ')}`);
    const failed = rows.filter((r) => !r.ok);
    if (!rows.length) log('nothing to check: the reference holds none of the known quantities');
    log(
      failed.length
        ? `FAILED: ${failed.length} of ${rows.length} checks (${failed.map((r) => r.name).join(', ')})`
        : `PASSED: ${rows.length} checks in ${((Date.now() - t0) / 1000).toFixed(1)} s`,
    );
    if (o.out)
      fs.writeFileSync(
        o.out,
        JSON.stringify(
          {
            model: o.model,
            reference: o.reference,
            dtype,
            device,
            atol: tol.atol,
            rtol: tol.rtol,
            passed: failed.length === 0 && rows.length > 0,
            rows,
            unchecked,
          },
          (_, v) => (typeof v === 'number' && !Number.isFinite(v) ? String(v) : v),
          2,
        ) + '\n',
      );
    return failed.length || !rows.length ? 1 : 0;
  } finally {
    session?.dispose();
    ref.close();
  }
}
