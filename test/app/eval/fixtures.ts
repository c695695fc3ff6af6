// fixtures.ts — shared by the eval tests (scienceqa, llava_bench, answer and cli .test.ts): the tiny fixture
// model's folder, a temp folder per test file, a JSONL reader, the hand-made ScienceQA problem set with its
// predictions, the In-the-Wild context of the judge tests, and a local chat-completions mock for the judge.
import type { Test } from 'tap';
import * as fs from 'fs';
import * as http from 'http';
import * as os from 'os';
import * as path from 'path';
import type { AddressInfo } from 'net';
import type { AnswerRecord, SqaProblem, SqaProblems, WildContext } from '../../../lib/app/eval/index';
import { TEST_DIR } from '../../helpers';

export const FIX = path.join(TEST_DIR, 'fixtures', 'tiny-llava');

/** A temp folder removed when the test file ends (`tmp`), and `tmpFile(name)`: a fresh path in it. */
export function tempDir(t: Pick<Test, 'teardown'>): { tmp: string; tmpFile: (name: string) => string } {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'llava-eval-'));
  t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));
  let fileNo = 0;
  return { tmp, tmpFile: (name: string) => path.join(tmp, `${fileNo++}-${name}`) };
}

export const readLines = (f: string) =>
  fs
    .readFileSync(f, 'utf8')
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l));

// ---------------------------------------------------------------------------------------------------------
// ScienceQA

export const prob = (o: Partial<SqaProblem>): SqaProblem => ({
  question: 'Q?',
  choices: ['a', 'b'],
  answer: 0,
  hint: '',
  image: null,
  subject: 'natural science',
  grade: 'grade3',
  split: 'test',
  lecture: '',
  solution: '',
  ...o,
});

// Seven test problems covering every category, plus one from another split.
export const PROBLEMS: SqaProblems = {
  p1: prob({ subject: 'natural science', grade: 'grade3', hint: 'h', image: 'i.png', answer: 0, choices: ['a', 'b'] }),
  p2: prob({ subject: 'social science', grade: 'grade8', hint: '', image: null, answer: 1, choices: ['a', 'b', 'c'] }),
  p3: prob({ subject: 'language science', grade: 'grade10', hint: 'x', image: null, answer: 2, choices: ['a', 'b', 'c'] }),
  p4: prob({ subject: 'natural science', grade: 'grade5', hint: '', image: 'j.png', answer: 1, choices: ['a', 'b'] }),
  p5: prob({ subject: 'natural science', grade: 'grade12', hint: '', image: null, answer: 0, choices: ['a', 'b', 'c', 'd'] }),
  p6: prob({ subject: 'social science', grade: 'grade1', hint: 'h', image: 'k.png', answer: 3, choices: ['a', 'b', 'c', 'd'] }),
  p7: prob({ subject: 'language science', grade: 'grade2', hint: '', image: null, answer: 0, choices: ['a', 'b'] }),
  p8: prob({ split: 'val', answer: 0 }),
};
export const SPLITS = { test: ['p1', 'p2', 'p3', 'p4', 'p5', 'p6', 'p7'], val: ['p8'] };
export const PREDS: AnswerRecord[] = [
  { question_id: 'p1', prompt: '<image>\nQ', text: 'A' }, // right
  { question_id: 'p2', prompt: 'Q', text: 'A' }, // overridden by the later line
  { question_id: 'p2', prompt: 'Q', text: 'The answer is B.' }, // right
  { question_id: 'p3', prompt: 'Q', text: 'The answer is D.' }, // D beyond 3 choices: wrong
  { question_id: 'p4', prompt: 'Q', text: 'A. no' }, // wrong; its prompt has no <image>, so not in IMG-Accuracy
  // p5 missing: FAILED
  { question_id: 'p6', prompt: '<image>\nQ', text: 'D' }, // right
  { question_id: 'p7', prompt: 'Q', text: 'The answer is A. I repeat: The answer is A.' }, // twice: FAILED
  { question_id: 'p8', prompt: 'Q', text: 'A' }, // other split, ignored
];

// The GPT-4 ensembles (scienceqa_gpt4.ts): five problems both sides answered and one GPT-4 did not. Every
// letter is usable except GPT-4's on g4, a one-choice problem, so its random choice can only be index 0.
export const G4_PROBLEMS: SqaProblems = {
  g1: prob({ answer: 0, choices: ['a', 'b'] }),
  g2: prob({ answer: 1, choices: ['a', 'b', 'c'] }),
  g3: prob({ answer: 2, choices: ['a', 'b', 'c'] }),
  g4: prob({ answer: 0, choices: ['a'] }),
  g5: prob({ answer: 1, choices: ['a', 'b'] }),
  g6: prob({ answer: 0, choices: ['a', 'b'] }),
};
export const G4_SPLITS = { test: ['g1', 'g2', 'g3', 'g4', 'g5', 'g6'], both: ['g1', 'g2', 'g3', 'g4', 'g5'] };
const says = (question_id: string, letter: string): AnswerRecord => ({ question_id, prompt: 'Q', text: `The answer is ${letter}.` });
//               g1 g2 g3 g4 g5 g6     (answers: A B C A B A)
// model:        A  B  A  A  A  A      right on g1 g2 g4 (g6 is left out by complement)
// GPT-4:        B  B  C  -  A         right on g2 g3; g4 unparseable (its random index 0 is right)
// requery:      A  -  A  A  B         right on g1 g4 g5; g2 has none and keeps the model's (right)
export const G4_OURS: AnswerRecord[] = [says('g1', 'A'), says('g2', 'B'), says('g3', 'A'), says('g4', 'A'), says('g5', 'A'), says('g6', 'A')];
export const G4_GPT4 = { g1: 'The answer is B.', g2: 'The answer is B.', g3: 'The answer is C.', g4: 'I am not sure.', g5: 'The answer is A.' };
export const G4_REQUERY: AnswerRecord[] = [says('g1', 'A'), says('g3', 'A'), says('g4', 'A'), says('g5', 'B')];

// ---------------------------------------------------------------------------------------------------------
// LLaVA-Bench: an In-the-Wild context, and a chat-completions mock for the judge

export const WILD_CTX: WildContext = { image: '001.jpg', caption: 'A bowl of ramen with a soft-boiled egg.' };

export interface Mock {
  url: string;
  requests: Array<{ headers: http.IncomingHttpHeaders; body: Record<string, unknown> }>;
  maxInFlight: number;
  close(): Promise<void>;
}

/** A chat-completions mock: `reply(n, body)` gives [status, content or error text, headers?] for request n. */
export async function mockServer(
  reply: (n: number, body: Record<string, unknown>) => [number, string, Record<string, string>?] | Promise<[number, string, Record<string, string>?]>,
): Promise<Mock> {
  const m = { requests: [] as Mock['requests'], maxInFlight: 0 };
  let inFlight = 0;
  const server = http.createServer((req, res) => {
    let data = '';
    req.on('data', (c) => (data += c));
    req.on('end', async () => {
      inFlight++;
      m.maxInFlight = Math.max(m.maxInFlight, inFlight);
      const body = JSON.parse(data);
      const n = m.requests.length;
      m.requests.push({ headers: req.headers, body });
      const [status, text, headers] = await reply(n, body);
      inFlight--;
      res.writeHead(status, { 'content-type': 'application/json', ...(headers ?? {}) });
      const content = text === '<null>' ? null : text;
      res.end(
        status === 200 ? JSON.stringify({ choices: [{ message: { role: 'assistant', content } }] }) : JSON.stringify({ error: { message: text } }),
      );
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/v1`,
    get requests() {
      return m.requests;
    },
    get maxInFlight() {
      return m.maxInFlight;
    },
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
