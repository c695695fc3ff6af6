// Data records (docs/reference.md §4.7, §4.8, §6): parsing and validation reports, image checks, length heuristics,
// seeded shuffling and the modality-grouped sampler.
import t from 'tap';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import {
  MAX_RECORD_CHARS,
  checkImages,
  DataError,
  lengthOf,
  loadDataset,
  modalityLengthOf,
  parseDataset,
  sqaAnswerLetter,
  type Sample,
} from '../../../lib/app/processing/data';
import { mulberry32, randomPermutation, shuffleIndices } from '../../../lib/app/util/random';
import { pyStrip, pyWhitespaceSplit } from '../../../lib/app/util/pyformat';
import { epochOrder, lengthGroupedIndices, modalityLengthGroupedIndices, splitToEvenChunks } from '../../../lib/app/train/sampler';

const good = (id: string, image?: string) => ({
  id,
  ...(image !== undefined ? { image } : {}),
  conversations: [
    { from: 'human', value: image !== undefined ? 'What is this?\n<image>' : 'Hello there' },
    { from: 'gpt', value: 'A reply.' },
  ],
});

t.test('malformed JSON and wrong top level are fatal', async (t) => {
  t.throws(() => parseDataset('[{"id": "a", ', { source: 'x.json' }), /\[data\] x\.json: malformed JSON/);
  t.throws(() => parseDataset('{"id": "a"}'), /top level must be a JSON array/);
  // Even in skip mode a JSON syntax error cannot be skipped past; a bad record can.
  t.throws(() => parseDataset('[1,', { onError: 'skip' }), DataError);
  const r = parseDataset('[{"id": "a"}]', { onError: 'skip', logger: () => {} });
  t.same(r.samples, []);
  t.same(r.report.errors, [{ index: 0, id: 'a', message: 'conversations must be a non-empty array' }]);
});

t.test('bad records: reported with index and id, skipped or fatal', async (t) => {
  const records: unknown[] = [
    good('ok0', '000000033471.jpg'), // 0
    42, // 1 not an object
    { conversations: good('x').conversations }, // 2 missing id
    { ...good('img-null'), image: null }, // 3 image key present but null
    { id: 'no-conv' }, // 4
    {
      id: 'bad-role',
      conversations: [
        { from: 'Human', value: 'hi' },
        { from: 'gpt', value: 'yo' },
      ],
    }, // 5
    {
      id: 'not-alt',
      conversations: [
        { from: 'human', value: 'a' },
        { from: 'human', value: 'b' },
        { from: 'gpt', value: 'c' },
      ],
    }, // 6
    {
      id: 'ends-human',
      conversations: [
        { from: 'human', value: 'a' },
        { from: 'gpt', value: 'b' },
        { from: 'human', value: 'c' },
      ],
    }, // 7
    {
      id: 'empty',
      conversations: [
        { from: 'human', value: 'a' },
        { from: 'gpt', value: '  \n' },
      ],
    }, // 8
    {
      id: 'two-img',
      image: 'a.jpg',
      conversations: [
        { from: 'human', value: '<image>\n<image> a' },
        { from: 'gpt', value: 'b' },
      ],
    }, // 9
    {
      id: 'no-placeholder',
      image: 'a.jpg',
      conversations: [
        { from: 'human', value: 'a' },
        { from: 'gpt', value: 'b' },
      ],
    }, // 10
    {
      id: 'text-with-img',
      conversations: [
        { from: 'human', value: '<image>\na' },
        { from: 'gpt', value: 'b' },
      ],
    }, // 11
    {
      id: 'eos',
      conversations: [
        { from: 'human', value: 'a' },
        { from: 'gpt', value: 'b</s>' },
      ],
    }, // 12
    {
      id: 7,
      conversations: [
        { from: 'gpt', value: 'hello' },
        { from: 'human', value: 'a' },
        { from: 'gpt', value: 'b' },
      ],
    }, // 13 ok (warning)
    good('ok14'), // 14
  ];
  const logs: string[] = [];
  const { samples, indices, report } = parseDataset(JSON.stringify(records), { onError: 'skip', logger: (m) => logs.push(m), source: 'mix.json' });
  t.same(indices, [0, 13, 14]);
  t.same(
    samples.map((s) => s.id),
    ['ok0', '7', 'ok14'],
  );
  t.equal(samples[0].image, '000000033471.jpg');
  t.notOk('image' in samples[2], 'text-only sample has no image key');
  t.equal(report.total, 15);
  t.equal(report.valid, 3);
  const bad = [...new Set(report.errors.map((e) => e.index))];
  t.same(bad, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
  const msg = (i: number) =>
    report.errors
      .filter((e) => e.index === i)
      .map((e) => e.message)
      .join(' | ');
  t.match(msg(1), /not an object/);
  t.match(msg(2), /missing id/);
  t.equal(report.errors.find((e) => e.index === 2)?.id, null);
  t.match(msg(3), /image must be a non-empty string/);
  t.equal(report.errors.find((e) => e.index === 3)?.id, 'img-null');
  t.match(msg(4), /conversations must be a non-empty array/);
  t.match(msg(5), /from must be 'human' or 'gpt'/);
  t.match(msg(6), /roles must alternate/);
  t.match(msg(7), /last turn is from human/);
  t.match(msg(8), /value is empty/);
  t.match(msg(9), /exactly one <image>.*found 2/);
  t.match(msg(10), /found 0/);
  t.match(msg(11), /text-only sample .* contains an <image>/);
  t.match(msg(12), /<\/s>/);
  t.same(report.warnings, [{ index: 13, id: '7', message: 'first turn is from gpt; the v1 preprocessor drops it' }]);
  t.equal(logs.length, 1);
  t.match(logs[0], /mix\.json: skipped 12 of 15 malformed records \(first: record 1/);

  // Fatal: the first bad record throws, naming index and id.
  const err = t.throws(() => parseDataset(JSON.stringify(records.slice(0, 4)), { onError: 'fatal' })) as unknown;
  t.ok(err instanceof DataError);
  t.match((err as DataError).message, /record 1 \(id \?\): record is not an object/);
  t.throws(() => parseDataset(JSON.stringify([good('a'), records[3]])), /record 1 \(id img-null\)/, 'fatal is the default');
});

t.test('pretraining (LCS-558K / CC3M-595K) and ScienceQA kinds', async (t) => {
  const lcs = [
    {
      id: '000019465',
      image: '00001/000019465.jpg',
      conversations: [
        { from: 'human', value: 'Give a brief description of the image.\n<image>' },
        { from: 'gpt', value: 'a dog on the grass' },
      ],
    },
    {
      id: 'GCC_train_000000000',
      image: 'GCC_train_000000000.jpg',
      conversations: [
        { from: 'human', value: '<image>\nWhat is this?' },
        { from: 'gpt', value: 'a' },
        { from: 'human', value: 'b' },
        { from: 'gpt', value: 'c' },
      ],
    },
    {
      id: 'txt',
      conversations: [
        { from: 'human', value: 'a' },
        { from: 'gpt', value: 'b' },
      ],
    },
  ];
  const r = parseDataset(JSON.stringify(lcs), { kind: 'pretrain', onError: 'skip', logger: () => {} });
  t.same(r.indices, [0]);
  t.match(r.report.errors.find((e) => e.index === 1)?.message ?? '', /exactly 2 turns/);
  t.ok(r.report.errors.some((e) => e.index === 2 && /no image/.test(e.message)));

  const sqa = [
    {
      id: '5',
      image: '5/image.png',
      conversations: [
        { from: 'human', value: 'Question: Which is a mammal?\nContext: N/A\nOptions: (A) cat (B) frog\n<image>' },
        { from: 'gpt', value: 'Lecture text. Solution text. The answer is A.' },
      ],
    },
    {
      id: '6',
      conversations: [
        { from: 'human', value: 'q' },
        { from: 'gpt', value: 'no letter' },
      ],
    },
  ];
  const q = parseDataset(JSON.stringify(sqa), { kind: 'sqa' });
  t.equal(q.samples.length, 2);
  t.same(
    q.report.warnings.map((w) => w.index),
    [1],
  );
  t.equal(sqaAnswerLetter(q.samples[0].conversations[1].value), 'A');
});

t.test('loadDataset + checkImages reports missing files with their source index', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'llava-data-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.mkdirSync(path.join(dir, 'images', '00001'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'images', '00001', 'a.jpg'), 'x');
  fs.mkdirSync(path.join(dir, 'images', 'dir.jpg'));
  const file = path.join(dir, 'data.json');
  fs.writeFileSync(file, JSON.stringify([good('a', '00001/a.jpg'), 3, good('b', '00001/b.jpg'), good('t'), good('d', 'dir.jpg')]));
  const { samples, indices } = loadDataset(file, { onError: 'skip', logger: () => {} });
  const issues = checkImages(samples, path.join(dir, 'images'), indices);
  t.same(
    issues.map((i) => [i.index, i.id]),
    [
      [2, 'b'],
      [4, 'd'],
    ],
  );
  t.match(issues[0].message, /missing image file .*00001\/b\.jpg/);
});

t.test('lengthOf / modalityLengthOf: Python str.split() words, +128 for images', async (t) => {
  const s: Sample = {
    id: 'a',
    image: 'x.jpg',
    conversations: [
      { from: 'human', value: '<image>\nWhat  is\tthis?' },
      { from: 'gpt', value: ' A cat\u00a0sits.\n' },
    ],
  };
  // "<image>", "What", "is", "this?" + "A", "cat", "sits." (nbsp is Python whitespace) = 7
  t.equal(lengthOf(s), 7 + 128);
  t.equal(modalityLengthOf(s), 7);
  const txt: Sample = {
    id: 'b',
    conversations: [
      { from: 'human', value: 'one two' },
      { from: 'gpt', value: 'three' },
    ],
  };
  t.equal(lengthOf(txt), 3);
  t.equal(modalityLengthOf(txt), -3);
  t.same(pyWhitespaceSplit('a\x1cb\u200bc'), ['a', 'b\u200bc'], '\\x1c splits, zero-width space does not');
  t.equal(pyStrip('\x1f a \ufeff'), 'a \ufeff', 'Python strip: \\x1f yes, BOM no');
});

t.test('PRNG and plain shuffling are deterministic', async (t) => {
  const a = mulberry32(123);
  const b = mulberry32(123);
  const xs = Array.from({ length: 5 }, () => a());
  t.same(
    Array.from({ length: 5 }, () => b()),
    xs,
  );
  t.ok(xs.every((x) => x >= 0 && x < 1));
  t.same(shuffleIndices(50, 1, 0), shuffleIndices(50, 1, 0));
  t.notSame(shuffleIndices(50, 1, 0), shuffleIndices(50, 1, 1), 'epochs differ');
  t.notSame(shuffleIndices(50, 1, 0), shuffleIndices(50, 2, 0), 'seeds differ');
  t.same(
    [...shuffleIndices(50, 1)].sort((x, y) => x - y),
    Array.from({ length: 50 }, (_, i) => i),
  );
  t.same(randomPermutation(0, mulberry32(1)), []);
});

t.test('splitToEvenChunks: greedy balance, strided when not divisible', async (t) => {
  // sorted desc by length: 0(10) 1(8) 2(3) 3(1) → c0:0 (10), c1:1 (8), c1:2 (11, full), c0:3
  t.same(splitToEvenChunks([0, 1, 2, 3], [10, 8, 3, 1], 2), [
    [0, 3],
    [1, 2],
  ]);
  t.same(splitToEvenChunks([4, 3, 2, 1, 0], [1, 1, 1, 1, 1], 2), [
    [4, 2, 0],
    [3, 1],
  ]);
});

t.test('lengthGroupedIndices: megabatches sorted by length, chunks balanced', async (t) => {
  const lengths = Array.from({ length: 40 }, (_, i) => ((i * 37) % 23) + 1);
  const order = lengthGroupedIndices(lengths, 2, 2, mulberry32(5));
  t.same(
    [...order].sort((x, y) => x - y),
    Array.from({ length: 40 }, (_, i) => i),
  );
  for (let m = 0; m < 40; m += 4) {
    const mb = order.slice(m, m + 4);
    const top = Math.max(...mb.map((i) => lengths[i]));
    t.equal(lengths[mb[0]], top, 'longest sample opens its megabatch');
  }
});

t.test('group_by_modality_length: one modality per megabatch, mixed remainder last, deterministic', async (t) => {
  // 23 image samples (positive) and 14 text-only (negative); megabatch = batch 2 × world 3 = 6.
  const lengths: number[] = [];
  for (let i = 0; i < 37; i++) lengths.push(i % 8 < 5 ? 10 + ((i * 13) % 50) : -(5 + ((i * 7) % 30)));
  const nImg = lengths.filter((l) => l > 0).length;
  const nTxt = lengths.length - nImg;
  const order = modalityLengthGroupedIndices(lengths, 2, 3, mulberry32(11));
  t.same(
    [...order].sort((x, y) => x - y),
    Array.from({ length: 37 }, (_, i) => i),
    'a permutation',
  );
  t.same(modalityLengthGroupedIndices(lengths, 2, 3, mulberry32(11)), order, 'same seed, same order');
  t.notSame(modalityLengthGroupedIndices(lengths, 2, 3, mulberry32(12)), order);
  // Full megabatches: floor((n-1)/6) per modality (the last megabatch of each is always set aside).
  const nFull = Math.floor((nImg - 1) / 6) + Math.floor((nTxt - 1) / 6);
  for (let k = 0; k < nFull; k++) {
    const mb = order.slice(6 * k, 6 * k + 6);
    const signs = new Set(mb.map((i) => Math.sign(lengths[i])));
    t.equal(signs.size, 1, `megabatch ${k} is single-modality`);
  }
  const tail = order.slice(6 * nFull);
  t.equal(tail.length, nImg - 6 * Math.floor((nImg - 1) / 6) + nTxt - 6 * Math.floor((nTxt - 1) / 6));
  t.same(
    tail,
    [...tail].sort((x, y) => x - y),
    'remainder sorted by index',
  );
  t.same(new Set(tail.map((i) => Math.sign(lengths[i]))), new Set([1, -1]), 'remainder mixes both');

  t.throws(() => modalityLengthGroupedIndices([3, 0, -2], 1, 1, mulberry32(1)), /zero length/);
  // Single modality → plain length grouping.
  const one = modalityLengthGroupedIndices([5, 3, 9, 1], 2, 1, mulberry32(3));
  t.same([...one].sort(), [0, 1, 2, 3]);

  const samples: Sample[] = lengths.map((l, i) => ({
    id: String(i),
    ...(l > 0 ? { image: `${i}.jpg` } : {}),
    conversations: [
      { from: 'human', value: 'w '.repeat(Math.abs(l)) },
      { from: 'gpt', value: 'x' },
    ],
  }));
  const e0 = epochOrder(samples, { seed: 42, epoch: 0, groupByModalityLength: true, batchSize: 2, worldSize: 3 });
  t.same(epochOrder(samples, { seed: 42, epoch: 0, groupByModalityLength: true, batchSize: 2, worldSize: 3 }), e0);
  t.notSame(epochOrder(samples, { seed: 42, epoch: 1, groupByModalityLength: true, batchSize: 2, worldSize: 3 }), e0);
  t.same(epochOrder(samples, { seed: 42 }), shuffleIndices(37, 42, 0));
});

t.test('a record with runaway text is refused (skip or fatal), naming its index and id', async (t) => {
  const big = 'x'.repeat(MAX_RECORD_CHARS + 1);
  const recs = [
    {
      id: 'ok',
      conversations: [
        { from: 'human', value: 'Hi?' },
        { from: 'gpt', value: 'Hello.' },
      ],
    },
    {
      id: 'huge',
      conversations: [
        { from: 'human', value: 'Describe.' },
        { from: 'gpt', value: big },
      ],
    },
  ];
  const text = JSON.stringify(recs);
  t.throws(
    () => parseDataset(text, { source: 'big.json' }),
    /\[data\] big\.json: record 1 \(id huge\): the conversation holds 1000010 characters, over the limit of 1000000 per record/,
  );
  const logs: string[] = [];
  const r = parseDataset(text, { source: 'big.json', onError: 'skip', logger: (m) => logs.push(m) });
  t.same(
    r.samples.map((s) => s.id),
    ['ok'],
    'the runaway record is skipped',
  );
  t.match(r.report.errors[0], { index: 1, id: 'huge', message: /over the limit/ });
  t.ok(logs.length > 0, 'the skip is reported');
  t.equal(parseDataset(text, { maxRecordChars: 2 * MAX_RECORD_CHARS }).samples.length, 2, 'the limit can be raised');
});
