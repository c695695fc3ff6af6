// A trained model folder remembers how it was trained (lib/app/processing/training_record.ts, written by the
// Trainer through lib/app/train/train_state.ts): tiny stage-2 models are trained on the fixture with the v1
// template and the pad aspect, and the session, `llava chat` (in process and as a command), the server and
// the eval loader must pick v1 and pad without flags — before any guess from the format (llava-hf → llava_hf,
// square) or the directory name (original layout 'stage2' → llava_v0). Also the Jinja side
// (lib/app/processing/chat_template.ts): a llava-hf checkpoint that ships a chat_template is prompted with
// it, the fixture (which ships none) keeps the hand-written llava_hf prompt, every hand-written template's
// Jinja form renders the same prompts, and a trained llava-hf folder gets its training template's Jinja.
import t from 'tap';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawnSync } from 'child_process';
import { loadLlava } from '../../../lib/models/loader';
import { SafetensorsFile, writeSafetensors } from '../../../lib/io/safetensors';
import { makeDemoData } from '../../../lib/app/train/demo_data';
import { LlavaDataset, type DatasetSpec } from '../../../lib/app/train/dataset';
import { Trainer } from '../../../lib/app/train/trainer';
import { Tokenizer } from '../../../lib/app/processing/tokenizer';
import { buildPrompt, TEMPLATE_NAMES } from '../../../lib/app/processing/conversation';
import { CLIPImageProcessor, resolveProcessorConfig } from '../../../lib/app/processing/image';
import { CHAT_TEMPLATE, jinjaForTemplate, readChatTemplate, renderJinjaPrompt } from '../../../lib/app/processing/chat_template';
import { LlavaSession, resolveVision } from '../../../lib/app/processing/session';
import { runChat, openChatSession, chatPixels } from '../../../lib/app/inference/chat';
import { encodePrompt } from '../../../lib/app/inference/generate';
import { createServer } from '../../../lib/app/serve/server';
import { loadEvalModel } from '../../../lib/app/eval/answer';
import { TEST_DIR } from '../../helpers';

const ROOT = path.join(TEST_DIR, '..');
const FIX = path.join(TEST_DIR, 'fixtures', 'tiny-llava');
const IMAGE = path.join(FIX, 'image0.png'); // 40x30: pad and crop give different pixels
const Q = 'What is in the image?';
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'llava-trained-'));
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));
const demo = makeDemoData(path.join(tmp, 'demo'));

/** The llava-hf/llava-1.5-7b-hf chat template, as that checkpoint ships it. */
const LLAVA_15_HF =
  "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% endif %}{# Render all images first #}" +
  "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}{# Render all text next #}" +
  "{% if message['role'] != 'assistant' %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}{% endfor %}" +
  "{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}" +
  "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}";

/** A copy of the fixture whose tokenizer_config.json carries the llava-1.5-hf chat template. */
function hfWithChatTemplate(): string {
  const d = path.join(tmp, 'hf-with-template');
  fs.cpSync(FIX, d, { recursive: true });
  const tc = JSON.parse(fs.readFileSync(path.join(d, 'tokenizer_config.json'), 'utf8'));
  fs.writeFileSync(path.join(d, 'tokenizer_config.json'), JSON.stringify({ ...tc, chat_template: LLAVA_15_HF }, null, 2));
  return d;
}

/** An original-layout (llava_llama) copy of the fixture with its CLIP tower beside it. */
function originalBase(): string {
  const cfg = JSON.parse(fs.readFileSync(path.join(FIX, 'config.json'), 'utf8'));
  const src = SafetensorsFile.open(path.join(FIX, 'model.safetensors'));
  const pick = (rename: (n: string) => string | null) => {
    const out: Record<string, { dtype: 'F32'; shape: number[]; data: Uint8Array }> = {};
    for (const n of src.names()) {
      const m = rename(n);
      if (m) out[m] = { dtype: 'F32', shape: src.info(n).shape, data: src.read(n).data };
    }
    return out;
  };
  const tower = path.join(tmp, 'clip');
  const base = path.join(tmp, 'orig-base');
  fs.mkdirSync(tower);
  fs.mkdirSync(base);
  try {
    fs.writeFileSync(path.join(tower, 'config.json'), JSON.stringify({ model_type: 'clip_vision_model', ...cfg.vision_config }));
    writeSafetensors(
      path.join(tower, 'model.safetensors'),
      pick((n) => (n.startsWith('vision_tower.') ? n.slice('vision_tower.'.length) : null)),
    );
    const orig = (n: string): string | null => {
      const m = /^multi_modal_projector\.linear_(\d)\.(.*)$/.exec(n);
      if (m) return `model.mm_projector.${(Number(m[1]) - 1) * 2}.${m[2]}`;
      if (n.startsWith('language_model.model.')) return n.slice('language_model.'.length);
      return n === 'language_model.lm_head.weight' ? 'lm_head.weight' : null;
    };
    writeSafetensors(path.join(base, 'model.safetensors'), pick(orig));
  } finally {
    src.close();
  }
  const c = {
    ...cfg.text_config,
    model_type: 'llava_llama',
    mm_vision_tower: tower,
    mm_projector_type: 'mlp2x_gelu',
    mm_vision_select_layer: -2,
    mm_vision_select_feature: 'patch',
    tokenizer_model_max_length: 512,
  };
  fs.writeFileSync(path.join(base, 'config.json'), JSON.stringify(c));
  for (const f of ['tokenizer.json', 'tokenizer_config.json', 'preprocessor_config.json']) fs.copyFileSync(path.join(FIX, f), path.join(base, f));
  return base;
}

/** Stage 2 on the demo data with the v1 template and the given aspect, 2 steps, into `out`. */
async function trainStage2(base: string, out: string, aspect: 'pad' | 'square'): Promise<void> {
  const model = loadLlava(base);
  try {
    const { processorConfig } = resolveVision(base);
    const spec: DatasetSpec = {
      imageFolder: demo.imageFolder,
      tokenizerDir: base,
      processor: processorConfig,
      template: 'v1',
      aspect,
      modelMaxLength: 512,
      format: model.config.format,
      numImageTokens: model.numImageTokens,
      imageTokenIndex: model.config.imageTokenIndex,
      maxLength: 512,
    };
    const ds = LlavaDataset.fromFile(demo.finetuneJson, spec, { tokenizer: Tokenizer.fromDir(base) });
    const tr = new Trainer(model, ds, {
      stage: 2,
      lr: 1e-3,
      microBatch: 2,
      gradAccum: 1,
      maxSteps: 2,
      outputDir: out,
      baseModelDir: base,
      progress: 'none',
      log: () => {},
    });
    await tr.train();
    tr.dispose();
  } finally {
    model.dispose();
  }
}

const hfOut = path.join(tmp, 'hf', 'stage2');
const jinjaOut = path.join(tmp, 'hf-jinja', 'stage2');
const origOut = path.join(tmp, 'orig', 'stage2');
t.before(async () => {
  await trainStage2(FIX, hfOut, 'pad');
  await trainStage2(hfWithChatTemplate(), jinjaOut, 'pad');
  await trainStage2(originalBase(), origOut, 'square');
});

const readJson = (f: string): Record<string, unknown> => JSON.parse(fs.readFileSync(f, 'utf8'));

t.test('the saved config.json records template, aspect and image token scheme', async (t) => {
  t.match(readJson(path.join(hfOut, 'config.json')), {
    conversation_template: 'v1',
    image_aspect_ratio: 'pad',
    image_token_index: 676,
    image_seq_length: 16,
  });
  t.match(readJson(path.join(hfOut, 'checkpoint-2', 'config.json')), { conversation_template: 'v1', image_aspect_ratio: 'pad' }, 'checkpoints too');
  const o = readJson(path.join(origOut, 'config.json'));
  t.match(o, {
    conversation_template: 'v1',
    image_aspect_ratio: 'square',
    mm_use_im_start_end: false,
    mm_use_im_patch_token: false,
    tokenizer_model_max_length: 512,
  });
  t.notOk('chat_template' in readJson(path.join(hfOut, 'tokenizer_config.json')), 'no chat_template where the base had none');
  const tc = readJson(path.join(jinjaOut, 'tokenizer_config.json'));
  t.equal(tc.chat_template, jinjaForTemplate('v1'), "the base's llava-1.5 chat_template is replaced by v1's");
});

t.test('session, chat, serve and eval pick the trained template and aspect without flags', async (t) => {
  const s = LlavaSession.load(hfOut);
  try {
    t.same(
      [s.template, s.templateSource, s.aspect, s.aspectSource],
      ['v1', 'config.json conversation_template', 'pad', 'config.json image_aspect_ratio'],
    );
    t.equal(s.prompt(Q, { image: true }), buildPrompt('v1', Q, { image: true }));
    t.equal(s.stop, '</s>', "v1's stop string");
    const pad = new CLIPImageProcessor(resolveProcessorConfig(hfOut)).preprocess(IMAGE, { aspect: 'pad' });
    const chatSession = openChatSession({ model: hfOut });
    const px = chatPixels(chatSession, IMAGE);
    t.same(px.toNumbers(), Array.from(pad.pixelValues), 'chat preprocesses with pad');
    px.dispose();
    chatSession.dispose();
  } finally {
    s.dispose();
  }
  const explicit = LlavaSession.load(hfOut, { template: 'llava_hf', aspect: 'square', images: false });
  t.same([explicit.template, explicit.templateSource, explicit.aspect], ['llava_hf', '--template', 'square'], 'flags still win');
  explicit.dispose();

  const info: string[] = [];
  let text = '';
  await runChat({
    model: hfOut,
    image: IMAGE,
    prompt: Q,
    temperature: 0,
    maxNewTokens: 2,
    output: { write: (x: string) => (text += x) },
    info: (l) => info.push(l),
  });
  t.same(info, ['llava chat: template v1 (config.json conversation_template), aspect pad (config.json image_aspect_ratio)']);

  const server = createServer({ model: hfOut, log: () => {} });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  try {
    const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
    t.same([server.llava.template, server.llava.aspect], ['v1', 'pad']);
    t.match(server.llava.describe, 'template v1 (config.json conversation_template), aspect pad');
    t.match(await (await fetch(url + '/health')).json(), { template: 'v1', aspect: 'pad' });
    const body = JSON.stringify({ messages: [{ role: 'user', content: 'Hi' }], temperature: 0, max_tokens: 1, return_token_ids: true });
    const j = (await (
      await fetch(url + '/v1/chat/completions', { method: 'POST', body, headers: { 'content-type': 'application/json' } })
    ).json()) as { prompt_token_ids: number[] };
    t.same(j.prompt_token_ids, encodePrompt(server.llava.model, server.llava.tokenizer, buildPrompt('v1', 'Hi')), 'serve prompts with v1');
  } finally {
    await new Promise<void>((r) => server.close(() => r()));
    await server.llava.shutdown();
  }

  const em = loadEvalModel(hfOut);
  t.same([em.template, em.aspect], ['v1', 'pad'], 'eval too');
  em.dispose();

  const o = LlavaSession.load(origOut);
  t.same([o.template, o.aspect], ['v1', 'square'], "original layout: not llava_v0 from the name 'stage2', not the base's pad");
  o.dispose();
});

t.test('llava chat (the command) says which template and aspect it uses', async (t) => {
  const r = spawnSync(
    process.execPath,
    [
      '--import',
      'tsx',
      path.join(ROOT, 'lib', 'app', 'cli', 'main.ts'),
      'chat',
      '--model',
      hfOut,
      '--image',
      IMAGE,
      '--prompt',
      Q,
      '--temperature',
      '0',
      '--max-new-tokens',
      '2',
    ],
    {
      cwd: ROOT,
      encoding: 'utf8',
      timeout: 120_000,
    },
  );
  t.equal(r.status, 0, r.stderr);
  t.match(r.stderr, /^llava chat: template v1 \(config\.json conversation_template\), aspect pad \(config\.json image_aspect_ratio\)$/m);
});

t.test('Jinja chat templates: the fixture ships none; a llava-hf chat_template is used and matches llava_hf', async (t) => {
  t.equal(readChatTemplate(FIX), null, 'the fixture ships no chat_template');
  const plain = LlavaSession.load(FIX, { images: false });
  t.same([plain.template, plain.aspect], ['llava_hf', 'square'], 'so it keeps the hand-written llava_hf prompt');
  t.equal(plain.prompt(Q, { image: true }), 'USER: <image>\nWhat is in the image? ASSISTANT:');
  plain.dispose();

  const dir = path.join(tmp, 'hf-with-template');
  const s = LlavaSession.load(dir, { images: false });
  try {
    t.equal(s.template, CHAT_TEMPLATE);
    t.match(s.templateSource, /chat_template of tokenizer_config\.json/);
    t.equal(s.stop, null, 'Jinja templates stop at EOS');
    const history: Array<[string, string]> = [['First?', 'An answer.']];
    t.equal(s.prompt(Q, { image: true }), buildPrompt('llava_hf', Q, { image: true }), 'llava-1.5-hf template = the hand-written llava_hf');
    t.equal(s.prompt(Q, { image: true, history }), buildPrompt('llava_hf', Q, { image: true, history }), 'with history too');
  } finally {
    s.dispose();
  }
  const em = loadEvalModel(dir);
  t.equal(em.template, CHAT_TEMPLATE, 'eval uses it as well');
  em.dispose();
});

t.test("every hand-written template's Jinja form renders the same prompts", async (t) => {
  for (const name of TEMPLATE_NAMES) {
    const source = jinjaForTemplate(name);
    if (source === null) {
      t.ok(name === 'llava_hf' || name.includes('mmtag'), `${name}: no Jinja form`);
      continue;
    }
    const tpl = { source, file: name };
    const history: Array<[string, string]> = [[' First? ', 'An answer.']];
    t.equal(renderJinjaPrompt(tpl, [{ role: 'user', text: Q, image: true }]), buildPrompt(name, Q, { image: true }), `${name}: one turn`);
    t.equal(renderJinjaPrompt(tpl, [{ role: 'user', text: Q }]), buildPrompt(name, Q), `${name}: text only`);
    const turns = [
      { role: 'user' as const, text: history[0][0], image: true },
      { role: 'assistant' as const, text: history[0][1] },
      { role: 'user' as const, text: Q },
    ];
    t.equal(renderJinjaPrompt(tpl, turns), buildPrompt(name, Q, { image: true, history }), `${name}: history`);
  }
  t.throws(() => renderJinjaPrompt({ source: '{% for %}', file: 'x.json' }, []), /\[chat_template\] x\.json: cannot parse/);
});
