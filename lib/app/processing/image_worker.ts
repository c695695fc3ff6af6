// image_worker.ts — a synchronous front door to sharp's asynchronous JPEG and WebP decoders.
//
// Why a worker and Atomics.wait, not async all the way: decodeImage and CLIPImageProcessor.preprocess are
// synchronous public APIs, and the training encoder (dataset.ts's SampleEncoder, run inline and inside
// worker threads by batch_loader.ts) is synchronous by design; making every one of those async would
// change the shape of the data pipeline and of the public API for one codec. sharp only offers promises,
// and a thread cannot block on its own promise (its callback needs the event loop the thread would be
// blocking). So each thread that decodes synchronously gets one helper worker (started on first use,
// unref'd so it never keeps the process alive) that runs sharp; the caller posts the bytes on a
// MessagePort, sleeps in Atomics.wait until the helper flips a shared flag, then takes the reply with
// receiveMessageOnPort — no event-loop turn needed. The decoded pixels are transferred, not copied.
// Callers that can await use decodeImageAsync (image.ts) instead, which runs sharp in their own thread and
// leaves the event loop free while libvips works.
import { Worker, MessageChannel, MessagePort, receiveMessageOnPort, isMainThread, workerData } from 'worker_threads';
import { decodeSharp, loadSharp, type ImageHeader, type ImageLimits, type RgbImage } from './image_codec';

const TAG = 'llava-image-decoder';
/** How long a caller waits for one decode before giving up (the helper died, or the machine is stuck). */
const TIMEOUT_MS = 300_000;

interface Request {
  id: number;
  bytes: Uint8Array;
  head: ImageHeader;
  lim: ImageLimits;
}
interface Reply {
  id: number;
  width?: number;
  height?: number;
  data?: Uint8Array;
  error?: string;
}

interface Bridge {
  worker: Worker;
  port: MessagePort;
  flag: Int32Array;
  seq: number;
}

let bridge: Bridge | null = null;

function startBridge(): Bridge {
  loadSharp(); // in this thread first: see loadSharp (the main thread must hold libvips before workers use it)
  const flag = new Int32Array(new SharedArrayBuffer(4));
  const { port1, port2 } = new MessageChannel();
  const data = { tag: TAG, flag, port: port2 };
  const opts = { workerData: data, transferList: [port2] };
  const worker = __filename.endsWith('.ts')
    ? // Source run (tsx / tap): a worker cannot load .ts by itself; register tsx's CommonJS hook first.
      new Worker(`require(${JSON.stringify(require.resolve('tsx/cjs'))}); require(${JSON.stringify(__filename)});`, { ...opts, eval: true })
    : new Worker(__filename, opts);
  worker.unref();
  port1.unref();
  worker.on('error', () => {
    // Reported to the waiting caller as a timeout at worst; the next call starts a fresh helper.
    if (bridge?.worker === worker) bridge = null;
  });
  worker.on('exit', () => {
    if (bridge?.worker === worker) bridge = null;
  });
  return { worker, port: port1, flag, seq: 0 };
}

/** Decodes a JPEG or WebP synchronously (header already read and checked against `lim`). Errors are thrown with
 *  the decoder's message. */
export function decodeSharpSync(bytes: Uint8Array, head: ImageHeader, lim: ImageLimits): RgbImage {
  const b = (bridge ??= startBridge());
  const id = ++b.seq;
  Atomics.store(b.flag, 0, 0);
  // Structured cloning copies a view's whole backing buffer: send a view of a larger buffer as a copy.
  const own = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength ? bytes : bytes.slice();
  b.port.postMessage({ id, bytes: own, head, lim } satisfies Request);
  const start = Date.now();
  for (;;) {
    const got = receiveMessageOnPort(b.port);
    if (got) {
      const r = got.message as Reply;
      if (r.id !== id) continue; // a reply to an abandoned (timed-out) request
      if (r.error !== undefined) throw new Error(r.error);
      return { width: r.width!, height: r.height!, data: r.data! };
    }
    const left = TIMEOUT_MS - (Date.now() - start);
    if (left <= 0) {
      bridge = null;
      void b.worker.terminate();
      throw new Error(`the image decoder did not answer within ${TIMEOUT_MS / 1000} s`);
    }
    Atomics.wait(b.flag, 0, 0, left);
    Atomics.store(b.flag, 0, 0);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Helper worker entry

if (!isMainThread && workerData && (workerData as { tag?: string }).tag === TAG) {
  const { flag, port } = workerData as { flag: Int32Array; port: MessagePort };
  const answer = (r: Reply, transfer: ArrayBuffer[] = []): void => {
    port.postMessage(r, transfer);
    Atomics.store(flag, 0, 1);
    Atomics.notify(flag, 0);
  };
  port.on('message', (m: Request) => {
    decodeSharp(m.bytes, m.head, m.lim).then(
      (img) => answer({ id: m.id, width: img.width, height: img.height, data: img.data }, [img.data.buffer as ArrayBuffer]),
      (e: unknown) => answer({ id: m.id, error: e instanceof Error ? e.message : String(e) }),
    );
  });
}
