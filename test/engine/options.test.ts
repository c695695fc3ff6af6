// options.test.ts — options bags are checked against their types' keys (lib/options.ts): a misspelt or
// foreign key (PyTorch's `keepdim`-style names, `causal` for `isCausal`) is an error that names the option
// and the closest known one, never a silently ignored setting; a non-object is refused; every known key is
// still accepted (the suites that use them: ops, nn, optim, models, app).
import t from 'tap';
import * as L from '../../lib';
import { checkOptions, optionKeys } from '../../lib/options';
import { Trainer } from '../../lib/app/train/trainer';
import type { LlavaForConditionalGeneration } from '../../lib';
import type { Tokenizer } from '../../lib';
import { LlavaDataset } from '../../lib/app/train/dataset';
import * as path from 'path';
import { refuses, TEST_DIR } from '../helpers';

t.test('checkOptions: unknown keys, suggestions, non-objects', async (tt) => {
  const keys = optionKeys<{ isCausal?: boolean; scale?: number; weightDecay?: number }>({ isCausal: true, scale: true, weightDecay: true });
  const run = (o: unknown) => () => checkOptions('op', o, keys);
  tt.doesNotThrow(run(undefined), 'undefined is no options');
  tt.doesNotThrow(run(null), 'null is no options');
  tt.doesNotThrow(run({}), 'an empty object');
  tt.doesNotThrow(run({ isCausal: true, scale: 2, weightDecay: 0 }), 'every known key');
  tt.doesNotThrow(run({ scale: undefined }), 'a known key set to undefined');
  tt.throws(run({ causal: true }), /^\[op\] unknown option 'causal' \(did you mean 'isCausal'\?\); the options are isCausal, scale, weightDecay$/);
  tt.throws(run({ weight_decay: 0.1 }), /unknown option 'weight_decay' \(did you mean 'weightDecay'\?\)/, 'snake case');
  tt.throws(run({ Scale: 1 }), /unknown option 'Scale' \(did you mean 'scale'\?\)/, 'case');
  tt.throws(run({ sclae: 1 }), /unknown option 'sclae' \(did you mean 'scale'\?\)/, 'transposed letters');
  tt.throws(run({ zzz: 1 }), /^\[op\] unknown option 'zzz'; the options are /, 'no suggestion when nothing is close');
  tt.throws(run({ x: 1 }), /unknown option 'x';/, 'a one-letter key suggests nothing');
  tt.throws(run(true), /^\[op\] options must be an object, got boolean$/);
  tt.throws(run(3), /options must be an object, got number/);
  tt.throws(run('isCausal'), /options must be an object, got string/);
  tt.throws(run([1]), /options must be an object, got an array/);
});

t.test('tensor ops, layers, optimizer and autograd refuse unknown options', async (tt) => {
  const q = L.randn([1, 2, 4, 8]);
  const x = L.randn([3, 5], { requiresGrad: true });
  const target = L.tensor([0, 1, 2]);
  const W = L.zeros([4, 5]);
  const A = L.zeros([2, 5]);
  const B = L.zeros([4, 2]);
  refuses(tt, 'sdpa causal', /^\[attention\] unknown option 'causal' \(did you mean 'isCausal'\?\)/, () =>
    L.scaledDotProductAttention(q, q, q, { causal: true } as never),
  );
  refuses(tt, 'sdpa attn_mask', /^\[attention\] unknown option 'attn_mask' \(did you mean 'mask'\?\)/, () =>
    L.scaledDotProductAttention(q, q, q, { attn_mask: null } as never),
  );
  refuses(tt, 'composite attention', /^\[attention_composite\] unknown option 'causal'/, () =>
    L.attentionComposite(q, q, q, { causal: true } as never),
  );
  refuses(tt, 'cross entropy ignore_index', /^\[cross_entropy\] unknown option 'ignore_index' \(did you mean 'ignoreIndex'\?\)/, () =>
    L.crossEntropy(x, target, { ignore_index: 0 } as never),
  );
  refuses(tt, 'var unbiased', /^\[var\] unknown option 'unbiased'/, () => L.variance(x, 0, { unbiased: false } as never));
  refuses(tt, 'tensor.var keepDim', /^\[var\] unknown option 'keepDim' \(did you mean 'keepdim'\?\)/, () => x.var(0, { keepDim: true } as never));
  refuses(tt, 'tensor dtype typo', /^\[tensor\] unknown option 'dype' \(did you mean 'dtype'\?\)/, () =>
    L.tensor([1, 2], { dype: 'float64' } as never),
  );
  refuses(tt, 'zeros requires_grad', /^\[full\] unknown option 'requires_grad' \(did you mean 'requiresGrad'\?\)/, () =>
    L.zeros([2], { requires_grad: true } as never),
  );
  refuses(tt, 'empty options not an object', /^\[empty\] options must be an object, got string/, () => L.empty([2], 'float32' as never));
  refuses(tt, 'arange dtype typo', /^\[arange\] unknown option 'dtyp'/, () => L.arange(3, undefined, 1, { dtyp: 'float32' } as never));
  refuses(tt, 'randn seed', /^\[randn\] unknown option 'seed'/, () => L.randn([2], { seed: 1 } as never));
  refuses(tt, 'lora alpha', /^\[lora_linear\] unknown option 'alpha'/, () => L.loraLinear(x, W, null, A, B, { scale: 1, alpha: 16 } as never));
  refuses(
    tt,
    'Linear dtype typo',
    /^\[Linear\] unknown option 'dtpye' \(did you mean 'dtype'\?\)/,
    () => new L.nn.Linear(2, 3, true, { dtpye: 'float64' } as never),
  );
  refuses(
    tt,
    'LayerNorm elementwise_affine',
    /^\[LayerNorm\] unknown option 'elementwise_affine'/,
    () => new L.nn.LayerNorm(4, 1e-5, { elementwise_affine: false } as never),
  );
  refuses(
    tt,
    'RMSNorm',
    /^\[RMSNorm\] unknown option 'devcie' \(did you mean 'device'\?\)/,
    () => new L.nn.RMSNorm(4, 1e-6, { devcie: 'cpu' } as never),
  );
  refuses(tt, 'Embedding padding_idx', /^\[Embedding\] unknown option 'padding_idx'/, () => new L.nn.Embedding(4, 2, { padding_idx: 0 } as never));
  // The options given where a positional argument belongs.
  refuses(tt, 'Linear without bias', /^\[Linear\] bias must be a boolean, got object/, () => new L.nn.Linear(2, 3, { dtype: 'float64' } as never));
  refuses(
    tt,
    'LayerNorm without eps',
    /^\[LayerNorm\] eps must be a finite number >= 0, got object/,
    () => new L.nn.LayerNorm(4, { dtype: 'float64' } as never),
  );
  refuses(tt, 'RMSNorm eps NaN', /^\[RMSNorm\] eps must be a finite number >= 0, got NaN/, () => new L.nn.RMSNorm(4, NaN));
  refuses(tt, 'Linear size 2.5', /^\[Linear\] outFeatures must be a positive integer, got 2.5/, () => new L.nn.Linear(2, 2.5));
  refuses(tt, 'Embedding size string', /^\[Embedding\] numEmbeddings must be a positive integer, got 10/, () => new L.nn.Embedding('10' as never, 2));
  const p = L.zeros([2], { requiresGrad: true });
  refuses(
    tt,
    'AdamW weight_decay',
    /^\[AdamW\] unknown option 'weight_decay' \(did you mean 'weightDecay'\?\)/,
    () => new L.optim.AdamW([p], { lr: 1e-3, weight_decay: 0 } as never),
  );
  refuses(
    tt,
    'AdamW param group weight_decay',
    /^\[AdamW param group 0\] unknown option 'weight_decay' \(did you mean 'weightDecay'\?\)/,
    () => new L.optim.AdamW([{ params: [p], weight_decay: 0 } as never]),
  );
  const y = L.sum(L.square(x));
  refuses(tt, 'backward retain_graph', /^\[backward\] unknown option 'retain_graph' \(did you mean 'retainGraph'\?\)/, () =>
    y.backward(undefined, { retain_graph: true } as never),
  );
  const lin = new L.nn.Linear(2, 3);
  refuses(tt, 'loadStateDict', /^\[loadStateDict\] unknown option 'strictly' \(did you mean 'strict'\?\)/, () =>
    lin.loadStateDict({}, { strictly: false } as never),
  );
  // What they accept is unchanged.
  y.backward(undefined, { retainGraph: true });
  y.backward();
  tt.ok(x.grad, 'backward with a known option ran');
  const a = L.scaledDotProductAttention(q, q, q, { isCausal: true, scale: 0.5, mask: null });
  tt.same(a.shape, [1, 2, 4, 8], 'attention with every option');
  const opt = new L.optim.AdamW([{ params: [p], weightDecay: 0, lrScale: 2 }], { lr: 1e-3, betas: [0.9, 0.99], eps: 1e-8, weightDecay: 0.1 });
  tt.equal(opt.groups[0].lrScale, 2, 'AdamW with every option');
  const r = L.rand([2], { dtype: 'float64', device: 'cpu', requiresGrad: false, generator: new L.Generator(1) });
  tt.equal(r.dtype, 'float64', 'rand with every option');
  for (const z of [q, x, target, W, A, B, p, y, a, r]) z.dispose();
  lin.dispose();
});

t.test(
  'loading, sessions, generation, images, the server, evaluation, data generation, the OpenAI client, datasets, dist.init and the trainer refuse unknown options',
  async (tt) => {
    tt.throws(() => L.loadLlava('/nonexistent', { torch_dtype: 'bfloat16' } as never), /^\[fromPretrained\] unknown option 'torch_dtype'/);
    tt.throws(() => L.loadLlama('/nonexistent', { dtyp: 'bfloat16' } as never), /^\[loadLlama\] unknown option 'dtyp' \(did you mean 'dtype'\?\)/);
    tt.throws(() => L.LlavaSession.load('/nonexistent', { load_in_8bit: true } as never), /^\[session\] unknown option 'load_in_8bit'/);
    tt.throws(
      () => L.LlavaSession.load('/nonexistent', { visionTowr: 'x' } as never),
      /unknown option 'visionTowr' \(did you mean 'visionTower'\?\)/,
    );
    tt.throws(
      () => L.createLlavaServer({ model: '/nonexistent', api_key: 'k' } as never),
      /^\[serve\] unknown option 'api_key' \(did you mean 'apiKey'\?\)/,
    );
    tt.throws(
      () => L.createLlavaServer({ model: '/nonexistent', port: 8000 } as never),
      /^\[serve\] unknown option 'port'/,
      'createServer does not listen',
    );
    await tt.rejects(
      L.startLlavaServer({ model: '/nonexistent', hostname: '0.0.0.0' } as never),
      /^\[serve\] unknown option 'hostname' \(did you mean 'host'\?\)/,
    );
    const png = path.join(TEST_DIR, 'fixtures', 'tiny-llava', 'image0.png');
    tt.throws(() => L.decodeImage(png, { max_pixels: 10 } as never), /^\[decodeImage\] unknown option 'max_pixels'; the options are limits$/);
    tt.throws(
      () => L.decodeImage(png, { limits: { maxPixel: 10 } } as never),
      /^\[imageLimits\] unknown option 'maxPixel' \(did you mean 'maxPixels'\?\)/,
      'a cap is never ignored',
    );
    await tt.rejects(L.decodeImageAsync(png, { limit: {} } as never), /^\[decodeImage\] unknown option 'limit' \(did you mean 'limits'\?\)/);
    tt.throws(
      () => new L.OpenAIJudge({ apiKey: 'k', base_url: 'http://x' } as never),
      /^\[openai\] unknown option 'base_url' \(did you mean 'baseUrl'\?\)/,
    );
    tt.equal(L.decodeImage(png, { limits: { maxPixels: 1e6, maxSide: 4096 } }).width > 0, true, 'decoding with every option');
    const proc = new L.CLIPImageProcessor({ crop_size: 16, size: 16 });
    tt.throws(
      () => proc.preprocess(png, { aspect_mode: 'pad' } as never),
      /^\[preprocess\] unknown option 'aspect_mode' \(did you mean 'aspect'\?\)/,
    );
    await tt.rejects(proc.preprocessAsync(png, { limit: {} } as never), /^\[preprocess\] unknown option 'limit' \(did you mean 'limits'\?\)/);
    tt.same(proc.preprocess(png, { aspect: 'pad', limits: { maxPixels: 1e6 } }).shape, [3, 16, 16], 'preprocess with every option');
    await tt.rejects(
      L.generateAnswers({ max_new_tokens: 64 } as never),
      /^\[eval\] unknown option 'max_new_tokens' \(did you mean 'maxNewTokens'\?\)/,
    );
    await tt.rejects(L.runBenchReview({ output_file: 'x' } as never), /^\[eval\] unknown option 'output_file' \(did you mean 'outputFile'\?\)/);
    await tt.rejects(
      L.gptData.generateInstructData({ out_jsonl: 'x' } as never),
      /^\[gen-data\] unknown option 'out_jsonl' \(did you mean 'outJsonl'\?\)/,
    );
    tt.throws(() => L.gptData.writeDryRun({ max_tokens: 9 } as never), /^\[gen-data\] unknown option 'max_tokens' \(did you mean 'maxTokens'\?\)/);
    await tt.rejects(L.dist.init({ world_size: 2 } as never), /^\[dist\] unknown option 'world_size'; the options are /);
    tt.throws(
      () => LlavaDataset.fromFile('/nonexistent.json', {} as never, { on_error: 'skip' } as never),
      /^\[dataset\] unknown option 'on_error' \(did you mean 'onError'\?\)/,
    );
    const model = null as unknown as LlavaForConditionalGeneration;
    const tokenizer = null as unknown as Tokenizer;
    await tt.rejects(
      L.generateText(model, tokenizer, { prompt: 'hi', max_new_tokens: 8 } as never),
      /^\[generate\] unknown option 'max_new_tokens' \(did you mean 'maxNewTokens'\?\)/,
    );
    await tt.rejects(L.generateText(model, tokenizer, { prompt: 'hi', top_p: 0.9 } as never), /unknown option 'top_p' \(did you mean 'topP'\?\)/);
    const dataset = null as unknown as LlavaDataset;
    tt.throws(
      () => new Trainer(model, dataset, { stage: 1, lr: 1e-3, epohcs: 2 } as never),
      /^\[Trainer\] unknown option 'epohcs' \(did you mean 'epochs'\?\)/,
    );
    tt.throws(() => new Trainer(model, dataset, { stage: 1, lr: 1e-3, learning_rate: 2e-5 } as never), /\[Trainer\] unknown option 'learning_rate'/);
  },
);

t.test(
  'the tokenizer, stage freezing, conversion, ScienceQA, review summaries, GPT contexts, the loss plot and the demo data refuse unknown options',
  async (tt) => {
    const dir = path.join(TEST_DIR, 'fixtures', 'tiny-llava');
    const tok = L.Tokenizer.fromDir(dir);
    tt.throws(
      () => tok.encode('hi', { add_special_tokens: false } as never),
      /^\[tokenizer\.encode\] unknown option 'add_special_tokens' \(did you mean 'addSpecialTokens'\?\)/,
    );
    tt.throws(
      () => tok.tokenize('hi', { addSpecial: true } as never),
      /^\[tokenizer\.tokenize\] unknown option 'addSpecial' \(did you mean 'addSpecialTokens'\?\)/,
    );
    tt.throws(
      () => tok.decode([1], { skip_special_tokens: false } as never),
      /^\[tokenizer\.decode\] unknown option 'skip_special_tokens' \(did you mean 'skipSpecialTokens'\?\)/,
    );
    tt.same(tok.encode('hi', { addSpecialTokens: false }), tok.encode('hi').slice(1), 'encode with its option');
    tt.equal(tok.decode(tok.encode('hi'), { skipSpecialTokens: true }), 'hi', 'decode with its option');
    const model = null as unknown as LlavaForConditionalGeneration;
    const setStage = L.LlavaForConditionalGeneration.prototype.setStage;
    tt.throws(
      () => setStage.call(model, 2, { train_vision: true } as never),
      /^\[setStage\] unknown option 'train_vision' \(did you mean 'trainVision'\?\)/,
    );
    tt.throws(() => setStage.call(model, 3 as never), /^\[setStage\] stage must be 1 or 2, got 3$/);
    tt.throws(
      () => L.convertToSafetensors('/nonexistent', '/x', { on_file: () => {} } as never),
      /^\[convert\] unknown option 'on_file' \(did you mean 'onFile'\?\)/,
    );
    const ev = L.evaluation;
    tt.throws(
      () => ev.convertScienceQA({}, {}, 'test', { format: 'QCM-LEA' } as never),
      /^\[convertScienceQA\] unknown option 'format'; the options are input, output$/,
    );
    const q = { id: '1', conversations: [{ from: 'human', value: 'Q?' }] };
    tt.throws(
      () => ev.sqaPrompt(q as never, { single_pred_prompt: true } as never),
      /^\[sqaPrompt\] unknown option 'single_pred_prompt' \(did you mean 'singlePredPrompt'\?\)/,
    );
    tt.throws(
      () => ev.extractSqaAnswer('The answer is A.', 2, { seed: 1 } as never),
      /^\[extractSqaAnswer\] unknown option 'seed'; the options are onInvalid, rng$/,
    );
    tt.throws(
      () => ev.scoreScienceQA({}, [], [], { on_invalid: 'random' } as never),
      /^\[scoreScienceQA\] unknown option 'on_invalid' \(did you mean 'onInvalid'\?\)/,
    );
    tt.equal(ev.extractSqaAnswer('The answer is B.', 2, { onInvalid: 'wrong' }).index, 1, 'extraction with a known option');
    tt.throws(() => ev.summarizeReviews([], { ignored: [1] } as never), /^\[summarizeReviews\] unknown option 'ignored' \(did you mean 'ignore'\?\)/);
    const img = { width: 10, height: 10, captions: ['a'], objects: [] };
    tt.throws(
      () => L.gptData.buildContext(img as never, 'conversation', { coord_style: 'fixed' } as never),
      /^\[buildContext\] unknown option 'coord_style' \(did you mean 'coordStyle'\?\)/,
    );
    const { renderLossPlot } = await import('../../lib/app/train/loss_plot');
    tt.throws(
      () => renderLossPlot([{ step: 1, loss: 1 }], { log_y: true } as never),
      /^\[lossPlot\] unknown option 'log_y' \(did you mean 'logY'\?\)/,
    );
    const { makeDemoData } = await import('../../lib/app/train/demo_data');
    tt.throws(() => makeDemoData('/nonexistent', { coppies: 2 } as never), /^\[makeDemoData\] unknown option 'coppies' \(did you mean 'copies'\?\)/);
  },
);
