// The same tiny LLaVA written in the other checkpoint layouts the loader reads — original
// llava_llama (model.* + mm_projector + a separate CLIP directory), newer transformers in-memory
// names, sharded files — must load to identical weights and compute the fixture's logits. The
// original layout is driven with -200 sentinels (one per image) instead of expanded image tokens.
import t from 'tap';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as L from '../../lib';
import { loadLlava, loadClipVision, loadLlama } from '../../lib/models/loader';
import { SafetensorsFile, writeSafetensors } from '../../lib/io/safetensors';
import { TEST_DIR, readInts } from '../helpers';

const dir = path.join(TEST_DIR, 'fixtures', 'tiny-llava');
const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
const src = SafetensorsFile.open(path.join(dir, 'model.safetensors'));
const ref = SafetensorsFile.open(path.join(dir, 'reference.safetensors'));
const refI = (n: string): number[] => readInts(ref, n);
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'llava-formats-'));
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));

type Entry = { dtype: 'F32'; shape: number[]; data: Uint8Array };
function tensorsRenamed(rename: (n: string) => string | null): Record<string, Entry> {
  const out: Record<string, Entry> = {};
  for (const n of src.names()) {
    const m = rename(n);
    if (m) out[m] = { dtype: 'F32', shape: src.info(n).shape, data: src.read(n).data };
  }
  return out;
}
function copyTokenizer(to: string): void {
  for (const f of ['tokenizer.json', 'tokenizer_config.json', 'preprocessor_config.json']) fs.copyFileSync(path.join(dir, f), path.join(to, f));
}

const T = 143;
const ids = refI('input_ids');
const mask = refI('attention_mask');
const rows = [ids.slice(0, T), ids.slice(T)];
const masks = [mask.slice(0, T), mask.slice(T)];
const pv = ref.info('pixel_values');
const pixels = L.keep(L.tensor(ref.readAsFloat32('pixel_values'), { shape: pv.shape }));
t.teardown(() => pixels.dispose());

function maxLogitDiff(m: ReturnType<typeof loadLlava>, inputIds: number[][], attn: number[][], keepRow: (b: number, t: number) => number): number {
  return L.tidy(() => {
    const { logits } = m.forward({ inputIds, attentionMask: attn, pixelValues: pixels });
    const got = logits.dataSync() as Float32Array;
    const e = ref.readAsFloat32('logits');
    const V = 678;
    let mx = 0;
    for (let b = 0; b < 2; b++)
      for (let tt = 0; tt < T; tt++) {
        const r = keepRow(b, tt);
        if (r < 0) continue;
        for (let v = 0; v < V; v++) mx = Math.max(mx, Math.abs(got[(b * logits.shape[1] + r) * V + v] - e[(b * T + tt) * V + v]));
      }
    return mx;
  });
}

// The original layout: a CLIP directory, and a llava_llama directory pointing at it.
const clipDir = path.join(tmp, 'clip');
fs.mkdirSync(clipDir);
fs.writeFileSync(path.join(clipDir, 'config.json'), JSON.stringify({ model_type: 'clip_vision_model', ...cfg.vision_config }));
writeSafetensors(
  path.join(clipDir, 'model.safetensors'),
  tensorsRenamed((n) => (n.startsWith('vision_tower.') ? n.slice('vision_tower.'.length) : null)),
);
function originalDir(name: string, withProjector: boolean): string {
  const d = path.join(tmp, name);
  fs.mkdirSync(d);
  fs.writeFileSync(
    path.join(d, 'config.json'),
    JSON.stringify({
      ...cfg.text_config,
      model_type: 'llava_llama',
      mm_vision_tower: clipDir,
      mm_projector_type: 'mlp2x_gelu',
      mm_vision_select_layer: -2,
      mm_vision_select_feature: 'patch',
      tokenizer_model_max_length: 512,
    }),
  );
  writeSafetensors(
    path.join(d, 'model.safetensors'),
    tensorsRenamed((n) => {
      let m: RegExpExecArray | null;
      if ((m = /^multi_modal_projector\.linear_(\d)\.(.*)$/.exec(n)))
        return withProjector ? `model.mm_projector.${(Number(m[1]) - 1) * 2}.${m[2]}` : null;
      if (n.startsWith('language_model.model.')) return n.slice('language_model.'.length);
      if (n === 'language_model.lm_head.weight') return 'lm_head.weight';
      return null;
    }),
  );
  copyTokenizer(d);
  return d;
}

t.test('original llava_llama layout with -200 sentinels gives the same logits', async (tt) => {
  const m = loadLlava(originalDir('orig', true));
  tt.equal(m.config.format, 'llava_llama');
  // Collapse each run of 16 image tokens (676) into one -200 sentinel, and drop padding.
  const collapsed = rows.map((r, b) => {
    const out: number[] = [];
    const where: number[] = []; // position in the collapsed+spliced sequence for each original position
    let spliced = 0;
    for (let i = 0; i < r.length; i++) {
      if (!masks[b][i]) {
        where.push(-1);
        continue;
      }
      if (r[i] === 676) {
        if (i === 0 || r[i - 1] !== 676) out.push(-200);
      } else out.push(r[i]);
      where.push(spliced++);
    }
    return { out, where };
  });
  const diff = maxLogitDiff(
    m,
    collapsed.map((c) => c.out),
    collapsed.map((c) => c.out.map(() => 1)),
    (b, i) => collapsed[b].where[i],
  );
  tt.ok(diff < 5e-5, `max abs logit diff ${diff}`);
  m.dispose();
});

t.test('original layout without a projector starts from default init', async (tt) => {
  const warnings: string[] = [];
  const m = loadLlava(originalDir('noproj', false), { onWarning: (w) => warnings.push(w) });
  tt.match(warnings.join('\n'), /no projector weights: initialised mlp2x_gelu/);
  const w = m.projector.linears[0].weight.dataSync() as Float32Array;
  const bound = 1 / Math.sqrt(32);
  tt.ok(w.every((x) => Math.abs(x) <= bound) && w.some((x) => x !== 0), 'uniform(-1/sqrt(fan_in), 1/sqrt(fan_in))');
  m.dispose();
});

t.test('newer in-memory names and sharded files load the same model', async (tt) => {
  const d = path.join(tmp, 'newer');
  fs.mkdirSync(d);
  fs.copyFileSync(path.join(dir, 'config.json'), path.join(d, 'config.json'));
  const all = tensorsRenamed((n) => {
    if (n.startsWith('language_model.model.')) return 'model.language_model.' + n.slice('language_model.model.'.length);
    if (n === 'language_model.lm_head.weight') return 'lm_head.weight';
    return 'model.' + n;
  });
  const names = Object.keys(all);
  const half = Math.floor(names.length / 2);
  const shards = [names.slice(0, half), names.slice(half)];
  const weightMap: Record<string, string> = {};
  shards.forEach((ns, i) => {
    const file = `model-0000${i + 1}-of-00002.safetensors`;
    writeSafetensors(path.join(d, file), Object.fromEntries(ns.map((n) => [n, all[n]])));
    for (const n of ns) weightMap[n] = file;
  });
  fs.writeFileSync(path.join(d, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
  const m = loadLlava(d);
  const diff = maxLogitDiff(m, rows, masks, (b, i) => (masks[b][i] ? i : -1));
  tt.ok(diff < 5e-5, `max abs logit diff ${diff}`);
  m.dispose();
});

t.test('plain CLIP and LLaMA checkpoints load on their own', async (tt) => {
  const clip = loadClipVision(clipDir);
  const feats = L.tidy(() => L.slice(clip.forward(pixels, -2), 1, 1).dataSync() as Float32Array);
  const e = ref.readAsFloat32('vision_select_features');
  tt.ok(
    feats.every((x, i) => Math.abs(x - e[i]) < 2e-5),
    'CLIP features match',
  );
  clip.dispose();
  const ld = path.join(tmp, 'llama');
  fs.mkdirSync(ld);
  fs.writeFileSync(path.join(ld, 'config.json'), JSON.stringify({ ...cfg.text_config, model_type: 'llama' }));
  writeSafetensors(
    path.join(ld, 'model.safetensors'),
    tensorsRenamed((n) => (n.startsWith('language_model.') ? n.slice('language_model.'.length) : null)),
  );
  const lm = loadLlama(ld);
  tt.equal(lm.numParameters(), 2 * 678 * 48 + 2 * (4 * 48 * 48 + 3 * 48 * 112 + 2 * 48) + 48);
  lm.dispose();
});

t.test('LLaVA-1.6 / LLaVA-NeXT checkpoints are refused by name, before any weight is read', async (tt) => {
  const base = JSON.parse(fs.readFileSync(path.join(originalDir('next-base', true), 'config.json'), 'utf8'));
  const hf = JSON.parse(fs.readFileSync(path.join(TEST_DIR, 'fixtures', 'tiny-llava', 'config.json'), 'utf8'));
  const cases: [string, Record<string, unknown>, RegExp][] = [
    ['anyres', { ...base, image_aspect_ratio: 'anyres', mm_patch_merge_type: 'spatial_unpad' }, /\(image_aspect_ratio anyres\)/],
    ['anyres_max_9', { ...base, image_aspect_ratio: 'anyres_max_9' }, /\(image_aspect_ratio anyres_max_9\)/],
    ['spatial merge', { ...base, mm_patch_merge_type: 'spatial' }, /\(mm_patch_merge_type spatial\)/],
    ['llava-hf llava_next', { ...hf, model_type: 'llava_next' }, /\(model_type llava_next\)/],
    ['llava-hf llava_onevision', { ...hf, model_type: 'llava_onevision' }, /\(model_type llava_onevision\)/],
  ];
  for (const [name, cfgJson, re] of cases) {
    const d = path.join(tmp, `next-${name.replace(/\W/g, '_')}`);
    fs.mkdirSync(d);
    fs.writeFileSync(path.join(d, 'config.json'), JSON.stringify(cfgJson));
    tt.throws(() => loadLlava(d), re, name);
    tt.throws(() => loadLlava(d), /is a LLaVA-1\.6 \/ LLaVA-NeXT checkpoint .*"anyres" image tiling/, `${name}: says why`);
  }
  const flat = path.join(tmp, 'flat-pad');
  fs.mkdirSync(flat);
  for (const f of fs.readdirSync(path.join(tmp, 'next-base'))) fs.copyFileSync(path.join(tmp, 'next-base', f), path.join(flat, f));
  fs.writeFileSync(path.join(flat, 'config.json'), JSON.stringify({ ...base, image_aspect_ratio: 'pad', mm_patch_merge_type: 'flat' }));
  const m = loadLlava(flat);
  tt.equal(m.config.imageAspectRatio, 'pad', 'LLaVA-1.5 keys (pad, flat) still load');
  m.dispose();
});

t.test('language models and vision towers this engine would run wrongly are refused by their config', async (tt) => {
  const withText = (o: Record<string, unknown>) => ({ ...cfg, text_config: { ...cfg.text_config, ...o } });
  const withVision = (o: Record<string, unknown>) => ({ ...cfg, vision_config: { ...cfg.vision_config, ...o } });
  const cases: [string, Record<string, unknown>, RegExp][] = [
    ['another decoder', withText({ model_type: 'mpt' }), /the language model has model_type 'mpt'; this decoder is LLaMA's/],
    ['another activation', withText({ hidden_act: 'gelu' }), /the language model has hidden_act 'gelu'/],
    ['dynamic NTK RoPE', withText({ rope_scaling: { type: 'dynamic', factor: 2 } }), /RoPE scaling 'dynamic'/],
    ['llama3 RoPE', withText({ rope_parameters: { rope_type: 'llama3', factor: 8, rope_theta: 5e5 } }), /RoPE scaling 'llama3'/],
    ['linear RoPE below 1', withText({ rope_scaling: { type: 'linear', factor: 0.5 } }), /linear RoPE scaling needs a factor >= 1, got 0\.5/],
    ['a sliding window', withText({ model_type: 'mistral', sliding_window: 8 }), /a sliding attention window of 8 \(max_position_embeddings \d+\)/],
    ['SigLIP', withVision({ model_type: 'siglip_vision_model' }), /the vision tower has model_type 'siglip_vision_model'/],
    ['tanh GELU tower', withVision({ hidden_act: 'gelu_pytorch_tanh' }), /the vision tower has hidden_act 'gelu_pytorch_tanh'/],
  ];
  for (const [name, json, re] of cases) {
    const d = path.join(tmp, `arch-${name.replace(/\W/g, '_')}`);
    fs.mkdirSync(d);
    fs.writeFileSync(path.join(d, 'config.json'), JSON.stringify(json));
    tt.throws(() => loadLlava(d), re, name);
  }
});

t.test('linear RoPE scaling: the scaled model at positions p is the plain one at p / factor', async (tt) => {
  const d = path.join(tmp, 'rope-linear');
  fs.mkdirSync(d);
  fs.copyFileSync(path.join(dir, 'model.safetensors'), path.join(d, 'model.safetensors'));
  fs.writeFileSync(
    path.join(d, 'config.json'),
    JSON.stringify({ ...cfg, text_config: { ...cfg.text_config, rope_scaling: { type: 'linear', factor: 4 } } }),
  );
  const scaled = loadLlava(d);
  const plain = loadLlava(dir);
  L.tidy(() => {
    const e = L.randn([1, 6, cfg.text_config.hidden_size], { generator: new L.Generator(3) });
    const p = [[0, 1, 2, 5, 9, 40]];
    const maxDiff = (a: L.Tensor, b: L.Tensor) => L.max(L.abs(L.sub(a, b))).item();
    const got = scaled.lm.hidden(e, p);
    tt.equal(maxDiff(got, plain.lm.hidden(e, [p[0].map((x) => x / 4)])), 0, 'same hidden states at a quarter of the positions');
    tt.ok(maxDiff(got, plain.lm.hidden(e, p)) > 1e-3, 'and not those at the unscaled positions');
  });
  scaled.dispose();
  plain.dispose();
});
