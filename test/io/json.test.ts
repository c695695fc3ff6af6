// json.test.ts — JSON syntax errors name their line and column: the locator in lib/io/json.ts (V8's
// "at position N" when given, its own scan when not), readJson's message, and the dataset loader's
// (lib/app/processing/data.ts parseDataset).
import t from 'tap';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { describeJsonError, jsonErrorLocation, readJson, scanJsonError } from '../../lib/io/json';
import { parseDataset } from '../../lib/app/processing/data';

const parseError = (s: string): unknown => {
  try {
    JSON.parse(s);
  } catch (e) {
    return e;
  }
  throw new Error(`parsed: ${s}`);
};

t.test('the scanner finds the first bad character where V8 does', async (t) => {
  const cases: [string, number][] = [
    ['{"a": }', 6],
    ['[1,2,\n3,,]', 8],
    ['{"a":1\n"b":2}', 7],
    ['', 0],
    ['[1, 2', 5],
    ['{"a": tru}', 9],
    ['["abc\ndef"]', 5],
    ['[1] x', 4],
    ['{"a":"\\q"}', 7],
    ['nul', 3],
    ['{"a":1,}', 7],
    ['[01]', 2],
    ['[1.]', 3],
    ['[-]', 2],
    ['{"a" 1}', 5],
    ['{1:2}', 1],
    ['  [\n  {"x": [1, 2, {"y": nulll}]}\n]', 29],
  ];
  for (const [text, at] of cases) {
    t.equal(scanJsonError(text), at, `scan ${JSON.stringify(text)}`);
    const m = /at position (\d+)/.exec((parseError(text) as Error).message);
    if (m) t.equal(Number(m[1]), at, `V8 agrees on ${JSON.stringify(text)}`);
  }
  for (const ok of ['[]', '{}', '{"a":[1,-2.5e3,true,null,"x\\u00e9\\n"],"b":{}}', ' 3 ', '"s"', '[[[[[[]]]]]]'])
    t.equal(scanJsonError(ok), -1, `valid ${ok}`);
  t.equal(scanJsonError('['.repeat(200000)), 200000, 'deep nesting does not overflow the stack');
});

t.test('line and column are 1-based, lines split at \\n (\\r\\n counts once)', async (t) => {
  const text = '[\n  {"id": 1},\r\n  {"id": 2,, }\n]';
  const l = jsonErrorLocation(text, parseError(text));
  t.same([l.line, l.column], [3, 12]);
  t.equal(text[l.offset], ',');
  t.notMatch(l.reason, /is not valid JSON|position/, 'V8 echo and position dropped from the reason');
  t.match(describeJsonError(text, parseError(text)), /^malformed JSON at line 3, column 12 \(Expected double-quoted property name\)$/);
  const end = '{"a": [1, 2';
  t.match(describeJsonError(end, parseError(end)), /at line 1, column 12 /);
  // an error without a usable position falls back to the scan
  t.same(jsonErrorLocation('[1,\n x]', new Error('something else')).line, 2);
});

t.test('readJson and the dataset loader name line and column', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'json-test-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const f = path.join(dir, 'cfg.json');
  fs.writeFileSync(f, '{\n  "a": 1,\n  "b": [1, 2\n}\n');
  t.throws(
    () => readJson(f, 'config', 'loader'),
    /^\[loader\] config .*cfg\.json: malformed JSON at line 4, column 1 \(Expected ',' or '\]' after array element\)$/,
  );
  t.throws(() => readJson(path.join(dir, 'nope.json'), 'config', 'loader'), /^\[loader\] config .*nope\.json not found$/);
  fs.writeFileSync(f, '[1]');
  t.throws(() => readJson(f, 'config', 'loader', { object: true }), /not a JSON object/);

  const data = '[\n  {"id": "a", "conversations": []},\n  {"id": "b" "conversations": []}\n]';
  t.throws(
    () => parseDataset(data, { source: 'train.json' }),
    /^\[data\] train\.json: malformed JSON at line 3, column 14 \(Expected ',' or '\}' after property value\)$/,
  );
  const trailing = '[{"id": "a", "conversations": [{"from": "human", "value": "hi"},]}]';
  t.throws(() => parseDataset(trailing, { source: 'x.json' }), /malformed JSON at line 1, column 65 \(Unexpected token '\]'\)$/);
});
