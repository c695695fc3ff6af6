// messages.test.ts — one error line per failed command, without the area said twice: the prefix rule of
// lib/app/util/messages.ts, runAction in lib/app/cli/util.ts, and `llava chat` / `llava train` run as a user
// runs them (a JSON syntax error in the training data names its line and column).
import t from 'tap';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawnSync } from 'child_process';
import { commandErrorLine, stripCommandPrefix } from '../../../lib/app/util/messages';
import { runAction } from '../../../lib/app/cli/util';
import { makeDemoData } from '../../../lib/app/train/demo_data';
import { TEST_DIR } from '../../helpers';

const ROOT = path.join(TEST_DIR, '..');
const CLI = path.join(ROOT, 'lib', 'app', 'cli', 'main.ts');
const FIX = path.join(TEST_DIR, 'fixtures', 'tiny-llava');

t.test('a leading [command] or "command: " is dropped, other areas stay', async (t) => {
  t.equal(stripCommandPrefix('chat', '[chat] image file x.png not found'), 'image file x.png not found');
  t.equal(stripCommandPrefix('chat', 'chat: image file x.png not found'), 'image file x.png not found');
  t.equal(stripCommandPrefix('chat', '[session] no config.json'), '[session] no config.json');
  t.equal(stripCommandPrefix('train', '[data] train.json: malformed JSON'), '[data] train.json: malformed JSON');
  t.equal(stripCommandPrefix('train', 'the [train] area in the middle'), 'the [train] area in the middle');
  t.equal(stripCommandPrefix('eval sqa-answer', '[eval] bad'), 'bad', 'a multi-word command: any of its words');
  t.equal(stripCommandPrefix('chat', '[chatter] x'), '[chatter] x');
  t.equal(commandErrorLine('llava', 'chat', '[chat] boom'), 'llava chat: error: boom');
  t.equal(commandErrorLine('', 'demo', '[demo] --device cuda: CUDA is not available'), 'demo: error: --device cuda: CUDA is not available');
});

t.test('runAction prints one line and sets the exit code', async (t) => {
  const written: string[] = [];
  const write = process.stderr.write;
  const code = process.exitCode;
  process.stderr.write = ((s: string) => (written.push(String(s)), true)) as typeof process.stderr.write;
  try {
    await runAction('chat', () => {
      throw new Error('[chat] image file a.png not found');
    })();
    await runAction('train', async () => {
      throw new Error('[checkpoint] no weights in x');
    })();
    t.equal(process.exitCode, 1);
  } finally {
    process.stderr.write = write;
    process.exitCode = code;
  }
  t.same(written, ['llava chat: error: image file a.png not found\n', 'llava train: error: [checkpoint] no weights in x\n']);
});

t.test('the CLI: no doubled prefix; a data syntax error names line and column', async (t) => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'llava-msg-'));
  t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));
  const llava = (...args: string[]) =>
    spawnSync(process.execPath, ['--import', 'tsx', CLI, ...args], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
  const chat = llava('chat', '--model', FIX, '--image', path.join(tmp, 'nope.png'), '--prompt', 'hi');
  t.not(chat.status, 0);
  t.match(chat.stderr, /^llava chat: error: image file .*nope\.png not found$/m);
  t.notMatch(chat.stderr, /\[chat\]|chat: chat:/);

  const demo = makeDemoData(path.join(tmp, 'demo'));
  const bad = path.join(tmp, 'bad.json');
  const lines = fs.readFileSync(demo.finetuneJson, 'utf8').split('\n');
  lines[4] = lines[4] + ',,';
  fs.writeFileSync(bad, lines.join('\n'));
  const train = llava(
    'train',
    '--stage',
    'finetune',
    '--model',
    FIX,
    '--data',
    bad,
    '--image-folder',
    demo.imageFolder,
    '--output',
    path.join(tmp, 'out'),
    '--max-steps',
    '1',
  );
  t.not(train.status, 0);
  t.match(
    train.stderr,
    new RegExp(
      `^llava train: error: \\[(data|dataset)\\] .*bad\\.json.*malformed JSON at line 5, column ${lines[4].length - 1} \\(Unexpected token ','\\)$`,
      'm',
    ),
  );
});
