// The session (lib/app/processing/session.ts) and the one vision-tower resolver behind every entry point.
// An original-layout (llava_llama) copy of the tiny fixture is written to a temp dir with its CLIP tower in
// a separate directory whose preprocessor_config.json differs from the defaults (mean, std, resize size,
// resample); the checkpoint itself has no preprocessor_config.json, and its config asks for 'pad'. Without
// a --vision-tower flag, chat's, serve's, eval's and train's preprocessing must all use the tower's config
// and give bit-identical pixels for the same image (chat and serve used to skip the tower's config).
import t from 'tap';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { SafetensorsFile, writeSafetensors } from '../../../lib/io/safetensors';
import { memory } from '../../../lib/core/memory';
import { CLIPImageProcessor, resolveProcessorConfig, type ClipProcessorConfig } from '../../../lib/app/processing/image';
import { Tokenizer } from '../../../lib/app/processing/tokenizer';
import { templateForModelName } from '../../../lib/app/processing/conversation';
import { LlavaSession, resolveVision, resolveVisionDir } from '../../../lib/app/processing/session';
import { openChatSession, chatPixels } from '../../../lib/app/inference/chat';
import { createServer, requestPixels } from '../../../lib/app/serve/server';
import { loadEvalModel } from '../../../lib/app/eval/answer';
import { SampleEncoder, type DatasetSpec } from '../../../lib/app/train/dataset';
import { TEST_DIR } from '../../helpers';

const FIX = path.join(TEST_DIR, 'fixtures', 'tiny-llava');
const IMAGE = path.join(FIX, 'image0.png'); // 40x30: pad and crop give different pixels
const cfg = JSON.parse(fs.readFileSync(path.join(FIX, 'config.json'), 'utf8'));
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'llava-session-'));
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));

// ---------------------------------------------------------------------------------------------------------
// An original-layout checkpoint: llava_llama dir + separate CLIP dir (as test/models/weight_layouts.test.ts)

type Entry = { dtype: 'F32'; shape: number[]; data: Uint8Array };
function renamed(rename: (n: string) => string | null): Record<string, Entry> {
  const src = SafetensorsFile.open(path.join(FIX, 'model.safetensors'));
  try {
    const out: Record<string, Entry> = {};
    for (const n of src.names()) {
      const m = rename(n);
      if (m) out[m] = { dtype: 'F32', shape: src.info(n).shape, data: src.read(n).data };
    }
    return out;
  } finally {
    src.close();
  }
}

/** The tower's own preprocessing: not CLIP's defaults in any of mean, std, resize size or resample. */
const TOWER_PROCESSOR: ClipProcessorConfig = {
  do_resize: true,
  size: { shortest_edge: 32 },
  resample: 2,
  do_center_crop: true,
  crop_size: { height: 28, width: 28 },
  do_rescale: true,
  rescale_factor: 1 / 255,
  do_normalize: true,
  image_mean: [0.5, 0.25, 0.75],
  image_std: [0.2, 0.3, 0.4],
};

function clipDir(name: string, processor: ClipProcessorConfig | null): string {
  const d = path.join(tmp, name);
  fs.mkdirSync(d);
  fs.writeFileSync(path.join(d, 'config.json'), JSON.stringify({ model_type: 'clip_vision_model', ...cfg.vision_config }));
  writeSafetensors(
    path.join(d, 'model.safetensors'),
    renamed((n) => (n.startsWith('vision_tower.') ? n.slice('vision_tower.'.length) : null)),
  );
  if (processor) fs.writeFileSync(path.join(d, 'preprocessor_config.json'), JSON.stringify(processor));
  return d;
}

function originalDir(name: string, visionTower: string, withWeights = true): string {
  const d = path.join(tmp, name);
  fs.mkdirSync(d);
  fs.writeFileSync(
    path.join(d, 'config.json'),
    JSON.stringify({
      ...cfg.text_config,
      model_type: 'llava_llama',
      mm_vision_tower: visionTower,
      mm_projector_type: 'mlp2x_gelu',
      mm_vision_select_layer: -2,
      mm_vision_select_feature: 'patch',
      image_aspect_ratio: 'pad',
      tokenizer_model_max_length: 512,
    }),
  );
  if (!withWeights) return d;
  writeSafetensors(
    path.join(d, 'model.safetensors'),
    renamed((n) => {
      let m: RegExpExecArray | null;
      if ((m = /^multi_modal_projector\.linear_(\d)\.(.*)$/.exec(n))) return `model.mm_projector.${(Number(m[1]) - 1) * 2}.${m[2]}`;
      if (n.startsWith('language_model.model.')) return n.slice('language_model.'.length);
      if (n === 'language_model.lm_head.weight') return 'lm_head.weight';
      return null;
    }),
  );
  // The tokenizer, but deliberately no preprocessor_config.json: the tower's must be found.
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(FIX, f), path.join(d, f));
  return d;
}

const tower = clipDir('clip-tower', TOWER_PROCESSOR);
const plainTower = clipDir('clip-plain', null);
const badTower = clipDir('clip-bad', { ...TOWER_PROCESSOR, crop_size: { height: 32, width: 32 } });
const orig = originalDir('llava-v1.5-tiny', tower);

const same = (a: ArrayLike<number>, b: ArrayLike<number>): boolean => a.length === b.length && Array.from(a).every((v, i) => Object.is(v, b[i]));

// ---------------------------------------------------------------------------------------------------------

t.test('resolveVision: the flag wins, else the config names the tower; processor config from the tower', async (tt) => {
  const v = resolveVision(orig);
  tt.equal(v.visionDir, tower, "no flag: the config's mm_vision_tower");
  tt.equal(v.imageSize, 28);
  tt.same(v.processorConfig, TOWER_PROCESSOR, "the tower's preprocessor_config.json");
  const flagged = resolveVision(orig, plainTower);
  tt.equal(flagged.visionDir, plainTower, 'the flag overrides the config');
  tt.same(
    flagged.processorConfig,
    { size: { shortest_edge: 28 }, crop_size: { height: 28, width: 28 } },
    'a tower without a config: CLIP defaults at its size',
  );
  const rel = originalDir('relative-tower', path.join('..', 'clip-tower'), false);
  tt.equal(path.resolve(resolveVisionDir(rel).visionDir!), tower, 'a tower named relative to the checkpoint');
  const hf = resolveVision(FIX);
  tt.equal(hf.visionDir, null, 'llava-hf: the tower is inside');
  tt.same(hf.processorConfig, JSON.parse(fs.readFileSync(path.join(FIX, 'preprocessor_config.json'), 'utf8')));
  tt.same(resolveProcessorConfig(orig, { visionDir: tower, imageSize: 28 }), TOWER_PROCESSOR);
});

t.test('chat, serve, eval and train preprocess an original checkpoint identically (tower config used)', async (tt) => {
  const expected = CLIPImageProcessor.fromDir(tower).preprocess(IMAGE, { aspect: 'pad' }).pixelValues;
  // What chat and serve computed before the fix: no tower dir, so CLIP defaults.
  const untowered = new CLIPImageProcessor(resolveProcessorConfig(orig, { imageSize: 28 })).preprocess(IMAGE, { aspect: 'pad' }).pixelValues;
  tt.notOk(same(expected, untowered), "the tower's config makes different pixels than the defaults");

  // llava chat
  const chat = openChatSession({ model: orig });
  let chatValues: Float32Array;
  try {
    tt.equal(chat.visionDir, tower);
    tt.equal(chat.aspect, 'pad', "original checkpoints follow the config's image_aspect_ratio");
    tt.equal(chat.template, templateForModelName('llava-v1.5-tiny'), 'template by model name');
    const px = chatPixels(chat, IMAGE);
    tt.same(px.shape, [1, 3, 28, 28]);
    chatValues = Float32Array.from(px.dataSync() as Float32Array);
    px.dispose();
  } finally {
    chat.dispose();
  }

  // llava serve
  const server = createServer({ model: orig, log: () => {} });
  let serveValues: Float32Array;
  try {
    serveValues = (await requestPixels(server.llava.session, { bytes: fs.readFileSync(IMAGE), param: 'messages[0].content[0]' }, Infinity))
      .pixelValues;
  } finally {
    await server.llava.shutdown();
  }

  // llava eval (answer generation)
  const em = loadEvalModel(orig);
  let evalValues: Float32Array;
  try {
    evalValues = em.imageProcessor.preprocess(IMAGE, { aspect: em.aspect }).pixelValues;
  } finally {
    em.dispose();
  }

  // llava train: the dataset encoder with the processor config trainAction builds (resolveVision), and the
  // v1.5 finetune preset's aspect ('pad').
  const v = resolveVision(orig);
  const spec: DatasetSpec = {
    imageFolder: FIX,
    tokenizerDir: orig,
    processor: v.processorConfig,
    template: 'v1',
    aspect: 'pad',
    modelMaxLength: 512,
    format: 'llava_llama',
    numImageTokens: 16,
    imageTokenIndex: -200,
    maxLength: 512,
  };
  const enc = new SampleEncoder(spec, Tokenizer.fromDir(orig));
  const item = enc.encode(
    {
      id: 's0',
      image: 'image0.png',
      conversations: [
        { from: 'human', value: '<image>\nWhat is it?' },
        { from: 'gpt', value: 'A picture.' },
      ],
    },
    0,
    0,
  );
  const trainValues = item.pixels!;

  tt.ok(same(chatValues, expected), 'chat uses the tower config');
  tt.ok(same(serveValues, expected), 'serve uses the tower config');
  tt.ok(same(evalValues, expected), 'eval uses the tower config');
  tt.ok(same(trainValues, expected), 'train uses the tower config');
});

t.test('LlavaSession: loading, options, ownership and errors', async (tt) => {
  const s = LlavaSession.load(FIX);
  try {
    tt.equal(s.format, 'llava-hf');
    tt.equal(s.template, 'llava_hf');
    tt.equal(s.aspect, 'square');
    tt.equal(s.name, 'tiny-llava');
    tt.equal(s.device, 'cpu');
    tt.equal(s.dtype, 'float32');
    tt.equal(s.stop, null, 'llava_hf has no stop string');
    tt.same(s.preprocess(IMAGE).shape, [3, 28, 28]);
    const px = s.pixelTensor(IMAGE);
    tt.same(px.shape, [1, 3, 28, 28]);
    tt.ok(same(px.dataSync() as Float32Array, CLIPImageProcessor.fromDir(FIX).preprocess(IMAGE).pixelValues), 'the checkpoint processor, no padding');
    px.dispose();

    // a session around a loaded model never frees it
    const wrapped = LlavaSession.fromModel(s.model, s.tokenizer, FIX, { template: 'vicuna_v1', aspect: 'pad' });
    tt.equal(wrapped.template, 'vicuna_v1');
    tt.equal(wrapped.stop, '</s>');
    tt.equal(wrapped.aspect, 'pad');
    tt.equal(wrapped.owned, false);
    wrapped.dispose();
    tt.ok(s.model.parameters()[0].dataSync().length > 0, 'still alive after the wrapper is disposed');
  } finally {
    s.dispose();
    s.dispose(); // idempotent
  }

  const flagged = LlavaSession.load(orig, { visionTower: plainTower, aspect: 'square', template: 'llava_v0' });
  try {
    tt.equal(flagged.visionDir, plainTower);
    tt.same(flagged.processorConfig, { size: { shortest_edge: 28 }, crop_size: { height: 28, width: 28 } });
    tt.equal(flagged.stop, '###');
  } finally {
    flagged.dispose();
  }

  tt.throws(
    () => LlavaSession.load(orig, { visionTower: badTower }),
    /\[session\] the image processor makes 32x32 images; the vision tower takes 28x28/,
  );
  tt.throws(() => LlavaSession.load(path.join(tmp, 'nope')), /\[session\] .*nope is not a model directory/);
  tt.throws(() => LlavaSession.load(FIX, { template: 'bogus' }), /unknown template 'bogus'/);
  tt.throws(() => LlavaSession.load(FIX, { dtype: 'int8' }), /\[session\] unsupported dtype 'int8'/);
  tt.throws(() => LlavaSession.load(FIX, { device: 'tpu' }), /\[session\] unknown device 'tpu'/);

  // tokenizer: 'optional' loads a directory without one; asking for it then says so
  const noTok = originalDir('no-tokenizer', tower);
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) fs.rmSync(path.join(noTok, f));
  tt.throws(() => LlavaSession.load(noTok));
  const opt = LlavaSession.load(noTok, { tokenizer: 'optional', images: false });
  try {
    tt.equal(opt.tokenizerOrNull, null);
    tt.throws(() => opt.tokenizer, /\[session\] .* has no usable tokenizer/);
  } finally {
    opt.dispose();
  }
});

t.test('sessions free what they load, also when loading fails after the weights', async (tt) => {
  const live = (): number => memory().numTensors;
  const before = live();
  LlavaSession.load(orig).dispose();
  tt.equal(live(), before, 'load + dispose leaves no tensors');
  tt.throws(() => LlavaSession.load(orig, { visionTower: badTower }), /image processor makes/);
  tt.equal(live(), before, 'a load that fails on the image processor frees the model');
});
