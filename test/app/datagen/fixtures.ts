// fixtures.ts — shared by the datagen tests (prompts, pipeline and cli .test.ts): a temp folder per test file,
// a hand-made COCO set with its hand-computed context strings, and a local chat-completions mock server.
import type { Test } from 'tap';
import * as fs from 'fs';
import * as http from 'http';
import * as os from 'os';
import * as path from 'path';
import type { AddressInfo } from 'net';
import { COMPLEX_REASONING_SYSTEM_MESSAGE, DETAIL_SYSTEM_MESSAGE } from '../../../lib/app/datagen/index';
import type { ChatMessage } from '../../../lib/app/datagen/index';

/** A temp folder, removed when the test file ends. */
export function tempDir(t: Pick<Test, 'teardown'>): string {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'llava-gptdata-'));
  t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));
  return tmp;
}

// ---------------------------------------------------------------------------------------------------------
// A hand-made COCO set: image 42 (640x480) with 5 captions and 3 boxes, image 7 (500x375) with 5 captions
// and no boxes, image 99 without captions (left out), plus stray annotations of an unknown image.

const CAPTIONS_42 = [
  'A man in a suit and tie stands by a window.',
  'A businessman wearing a striped tie.  ',
  'A man posing in\nformal clothes.',
  'Man in a dark suit with a red tie.',
  'A person dressed for the office.',
];
export function cocoJson(n = 2): { captions: unknown; instances: unknown } {
  const images = [
    { id: 42, file_name: '000000000042.jpg', width: 640, height: 480 },
    { id: 7, file_name: '000000000007.jpg', width: 500, height: 375 },
    { id: 99, file_name: '000000000099.jpg', width: 100, height: 100 },
  ];
  const annotations = [
    ...CAPTIONS_42.map((caption, i) => ({ id: i, image_id: 42, caption })),
    ...[1, 2, 3, 4, 5].map((k) => ({ id: 100 + k, image_id: 7, caption: `A cat on a sofa, view ${k}.` })),
    { id: 500, image_id: 12345, caption: 'an image that is not listed' },
  ];
  // Extra synthetic images for the client tests.
  for (let i = 0; i < n; i++) {
    const id = 1000 + i;
    images.push({ id, file_name: `${String(id).padStart(12, '0')}.jpg`, width: 200, height: 100 });
    for (let k = 0; k < 5; k++) annotations.push({ id: 10_000 + i * 5 + k, image_id: id, caption: `Synthetic scene ${id}, caption ${k}.` });
  }
  const instances = {
    categories: [
      { id: 1, name: 'person' },
      { id: 32, name: 'tie' },
      { id: 62, name: 'chair' },
    ],
    annotations: [
      { id: 1, image_id: 42, category_id: 32, bbox: [367.36, 143.04, 113.92, 194.88] },
      { id: 2, image_id: 42, category_id: 1, bbox: [40, 0, 280, 480] },
      { id: 3, image_id: 42, category_id: 62, bbox: [0, 120.5, 100.3, 60.2] },
      { id: 4, image_id: 12345, category_id: 1, bbox: [1, 2, 3, 4] },
      ...Array.from({ length: n }, (_, i) => ({ id: 100 + i, image_id: 1000 + i, category_id: 1, bbox: [20, 10, 100, 50] })),
    ],
  };
  return { captions: { images, annotations }, instances };
}

// Hand-computed boxes of image 42 (x2 = x + w, y2 = y + h, divided by 640 / 480):
//   tie    [367.36/640, 143.04/480, 481.28/640, 337.92/480] = [0.574, 0.298, 0.752, 0.704]
//   person [40/640 = 0.0625 (exact tie -> 0.062), 0, 320/640 = 0.5, 480/480 = 1]
//   chair  [0, 120.5/480 = 0.25104, 100.3/640 = 0.15672, 180.7/480 = 0.37646]
export const CAPS_42 = [
  'A man in a suit and tie stands by a window.',
  'A businessman wearing a striped tie.',
  'A man posing in formal clothes.',
  'Man in a dark suit with a red tie.',
  'A person dressed for the office.',
].join('\n');
export const CONTEXT_42_BOXES = `${CAPS_42}\n\ntie: [0.574, 0.298, 0.752, 0.704]\nperson: [0.062, 0.000, 0.500, 1.000]\nchair: [0.000, 0.251, 0.157, 0.376]`;

// ---------------------------------------------------------------------------------------------------------
// Mock chat-completions server

interface MockReply {
  status?: number;
  body?: unknown;
  headers?: Record<string, string>;
  delayMs?: number;
}
export interface Mock {
  url: string;
  requests: { auth: string | undefined; body: { model: string; messages: ChatMessage[]; temperature?: number } }[];
  inFlight: number;
  maxInFlight: number;
  handler: (body: { messages: ChatMessage[] }, n: number) => MockReply;
  close(): Promise<void>;
}

/** Answers in the format the system message asks for; the image id is echoed from the captions. */
export function formatReply(body: { messages: ChatMessage[] }): string {
  const sys = body.messages[0].content;
  const ctx = body.messages[body.messages.length - 1].content;
  const id = /Synthetic scene (\d+)/.exec(ctx)?.[1] ?? /(suit|cat)/.exec(ctx)?.[1] ?? '?';
  if (sys === DETAIL_SYSTEM_MESSAGE || sys === 'Describe it.') return `A detailed description of scene ${id}.`;
  if (sys === COMPLEX_REASONING_SYSTEM_MESSAGE) return `Question:\nWhat is special about scene ${id}?\n===\nAnswer:\nIt is synthetic.`;
  return `Question:\nWhat is in scene ${id}?\n===\nAnswer:\nShapes.\n===\nQuestion:\nHow many?\n===\nAnswer:\nA few.`;
}
export function ok(content: string): MockReply {
  return {
    body: {
      id: 'x',
      model: 'mock-model',
      choices: [{ index: 0, message: { role: 'assistant', content }, finish_reason: 'stop' }],
      usage: { total_tokens: 10 },
    },
  };
}

export async function startMock(handler: Mock['handler'] = (b) => ok(formatReply(b))): Promise<Mock> {
  const mock = { requests: [], inFlight: 0, maxInFlight: 0, handler } as unknown as Mock;
  const server = http.createServer((req, res) => {
    let data = '';
    req.on('data', (c) => (data += c));
    req.on('end', () => {
      mock.inFlight++;
      mock.maxInFlight = Math.max(mock.maxInFlight, mock.inFlight);
      const body = JSON.parse(data);
      mock.requests.push({ auth: req.headers.authorization, body });
      const r =
        req.url === '/v1/chat/completions'
          ? mock.handler(body, mock.requests.length)
          : { status: 404, body: { error: { message: `no route ${req.url}` } } };
      setTimeout(() => {
        mock.inFlight--;
        res.writeHead(r.status ?? 200, { 'content-type': 'application/json', ...r.headers });
        res.end(typeof r.body === 'string' ? r.body : JSON.stringify(r.body));
      }, r.delayMs ?? 0);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  mock.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
  mock.close = () => new Promise((r) => server.close(() => r()));
  return mock;
}
