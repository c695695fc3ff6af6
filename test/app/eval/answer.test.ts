// Answer generation (lib/app/eval/answer.ts) on the tiny fixture model: LLaVA-Bench answers equal to the
// transformers greedy reference, resumable and chunked; ScienceQA prompts recorded as the reference does,
// text-only questions and seeded sampling; and the resumable JSONL output (util/files.ts prepareJsonlOutput).
import t from 'tap';
import * as fs from 'fs';
import * as path from 'path';
import { SafetensorsFile } from '../../../lib/io/safetensors';
import type { BenchQuestion } from '../../../lib/app/eval/index';
import { generateAnswers, getChunk, loadEvalModel, shortUuid, type EvalModel } from '../../../lib/app/eval/answer';
import { prepareJsonlOutput } from '../../../lib/app/util/files';
import { FIX, readLines, tempDir } from './fixtures';
import { readInts } from '../../helpers';

const { tmp, tmpFile } = tempDir(t);

let em: EvalModel;
t.before(() => {
  em = loadEvalModel(FIX);
});
t.teardown(() => em?.dispose());

t.test('generateAnswers (bench): greedy answers equal the fixture reference; resumable', async (t) => {
  const ref = SafetensorsFile.open(path.join(FIX, 'reference.safetensors'));
  const expected = readInts(ref, 'greedy.output_ids');
  ref.close();
  t.equal(em.template, 'llava_hf');
  t.equal(em.modelId, 'tiny-llava');
  const questions: BenchQuestion[] = [
    { question_id: 0, image: 'image0.png', text: 'What is unusual about this image?', category: 'complex' },
    { question_id: 1, image: 'image1.png', text: 'Describe the image concisely.', category: 'detail' },
  ];
  const out = tmpFile('answers.jsonl');
  const o = {
    ...em,
    set: { kind: 'bench' as const, questions },
    imageFolder: FIX,
    answersFile: out,
    template: 'llava_v1',
    maxNewTokens: expected.length,
    progress: 'none' as const,
    log: () => {},
  };
  t.same(await generateAnswers(o), { total: 2, skipped: 0, written: 2 });
  const lines = readLines(out);
  t.same(Object.keys(lines[0]), ['question_id', 'prompt', 'text', 'answer_id', 'model_id', 'metadata']);
  t.same([lines[0].question_id, lines[0].prompt, lines[0].model_id, lines[0].metadata], [0, 'What is unusual about this image?', 'tiny-llava', {}]);
  // The fixture's greedy reference used this very prompt (llava_v1 template, image0).
  t.equal(lines[0].text, em.tokenizer.decode(expected).trim(), 'greedy answer = transformers reference');
  t.match(lines[0].answer_id, /^[2-9A-HJ-NP-Za-km-z]{22}$/);
  t.not(lines[0].answer_id, lines[1].answer_id);
  const before = fs.readFileSync(out, 'utf8');
  t.same(await generateAnswers(o), { total: 2, skipped: 2, written: 0 }, 'second run adds nothing');
  t.equal(fs.readFileSync(out, 'utf8'), before);
  // Killed mid-line: the partial answer is dropped and regenerated (greedy: the same text).
  fs.writeFileSync(out, before.split('\n')[0] + '\n' + before.split('\n')[1].slice(0, 15));
  t.same(await generateAnswers(o), { total: 2, skipped: 1, written: 1 });
  t.same(
    readLines(out).map((l) => l.text),
    [lines[0].text, lines[1].text],
  );
  // Chunks: the reference's get_chunk.
  t.same(getChunk([1, 2, 3, 4, 5], 2, 1), [4, 5]);
  t.same(getChunk([1, 2, 3], 4, 3), []);
  const c1 = tmpFile('chunk.jsonl');
  await generateAnswers({ ...o, answersFile: c1, numChunks: 2, chunkIdx: 1 });
  t.same(
    readLines(c1).map((l) => l.question_id),
    [1],
  );
  await t.rejects(
    generateAnswers({ ...o, answersFile: tmpFile('bad.jsonl'), set: { kind: 'bench', questions: [{ ...questions[0], image: 'missing.png' }] } }),
    /question 0: image file .*missing\.png not found/,
  );
  await t.rejects(generateAnswers({ ...o, answersFile: tmpFile('bad.jsonl'), template: 'nope' }), /unknown template 'nope'/);
  t.equal(shortUuid().length, 22);
});

t.test('generateAnswers (sqa): prompts recorded as the reference does, text-only questions, sampling seeds', async (t) => {
  const questions = [
    {
      id: '5',
      image: 'image0.png',
      conversations: [
        { from: 'human', value: 'Context: N/A\nQuestion: Which?\nOptions: (A) x (B) y\n<image>' },
        { from: 'gpt', value: 'The answer is A.' },
      ],
    },
    { id: '6', conversations: [{ from: 'human', value: 'Question: Why?\nOptions: (A) x (B) y' }] },
  ];
  const out = tmpFile('sqa.jsonl');
  const o = {
    ...em,
    set: { kind: 'sqa' as const, questions },
    imageFolder: FIX,
    answersFile: out,
    maxNewTokens: 4,
    singlePredPrompt: true,
    progress: 'none' as const,
    log: () => {},
  };
  t.same(await generateAnswers(o), { total: 2, skipped: 0, written: 2 });
  const lines = readLines(out);
  t.same(
    lines.map((l) => l.question_id),
    ['5', '6'],
  );
  t.equal(
    lines[0].prompt,
    "<image>\nContext: N/A\nQuestion: Which?\nOptions: (A) x (B) y\nAnswer with the option's letter from the given choices directly.",
  );
  t.equal(lines[1].prompt, "Question: Why?\nOptions: (A) x (B) y\nAnswer with the option's letter from the given choices directly.");
  t.ok(lines.every((l) => typeof l.text === 'string' && l.text.length > 0));
  // Sampling is reproducible per question (seed + index).
  const s1 = tmpFile('s1.jsonl');
  const s2 = tmpFile('s2.jsonl');
  await generateAnswers({ ...o, answersFile: s1, temperature: 1, seed: 11 });
  await generateAnswers({ ...o, answersFile: s2, temperature: 1, seed: 11 });
  t.same(
    readLines(s1).map((l) => l.text),
    readLines(s2).map((l) => l.text),
  );
  // The v0 answer prompter appends the second pass.
  const ap = tmpFile('ap.jsonl');
  await generateAnswers({ ...o, answersFile: ap, answerPrompter: true });
  t.ok(readLines(ap).every((l, i) => l.text.startsWith(lines[i].text + '\n The answer is ')));
  // Batched: the same answers, in question order, greedy and sampled, with and without the prompter.
  const many = [...questions, ...questions.map((q) => ({ ...q, id: q.id + 'b' })), { ...questions[1], id: '7' }];
  for (const extra of [{}, { temperature: 1, seed: 3 }, { answerPrompter: true }]) {
    const one = tmpFile('one.jsonl');
    const batched = tmpFile('batched.jsonl');
    await generateAnswers({ ...o, ...extra, set: { kind: 'sqa', questions: many }, answersFile: one });
    t.same(await generateAnswers({ ...o, ...extra, set: { kind: 'sqa', questions: many }, answersFile: batched, batchSize: 2 }), {
      total: 5,
      skipped: 0,
      written: 5,
    });
    const strip = (f: string) => readLines(f).map(({ question_id, prompt, text }) => ({ question_id, prompt, text }));
    t.same(strip(batched), strip(one), `batchSize 2 answers as batchSize 1 (${JSON.stringify(extra)})`);
  }
  // A question that fails mid-batch stops the run: the answers before it are written, in order, and none
  // after it (the file stays resumable); a second run with the image back finishes the same file.
  const broken = many.map((q, k) => (k === 3 ? { ...q, image: 'missing.png' } : q));
  const part = tmpFile('part.jsonl');
  const sqa = (qs: typeof many) => ({ ...o, set: { kind: 'sqa' as const, questions: qs }, answersFile: part, batchSize: 3 });
  await t.rejects(generateAnswers(sqa(broken)), /image file .*missing\.png not found/);
  const all = tmpFile('all.jsonl');
  await generateAnswers({ ...sqa(many), answersFile: all, batchSize: 1 });
  const texts = (f: string) => readLines(f).map(({ question_id, text }) => ({ question_id, text }));
  t.same(texts(part), texts(all).slice(0, 3), 'the three answers before the failing question, in order');
  t.same(await generateAnswers(sqa(many)), { total: 5, skipped: 3, written: 2 });
  t.same(texts(part), texts(all), 'resumed to the same answers');
  await t.rejects(generateAnswers({ ...o, answersFile: tmpFile('x.jsonl'), batchSize: 0 }), /batchSize must be a positive integer \(got 0\)/);
});

t.test('prepareJsonlOutput: creates, cuts a partial last line, refuses a broken middle line', async (t) => {
  const f = path.join(tmp, 'sub', 'dir', 'x.jsonl');
  t.same(prepareJsonlOutput(f), []);
  t.ok(fs.existsSync(f));
  fs.writeFileSync(f, '{"a":1}\n{"a":');
  t.same(prepareJsonlOutput(f), [{ a: 1 }]);
  t.equal(fs.readFileSync(f, 'utf8'), '{"a":1}\n');
  fs.writeFileSync(f, '{"a":1}\nnot json\n{"a":2}\n');
  t.throws(() => prepareJsonlOutput(f), /line 2 is not valid JSON/);
});
