// cases_conv.ts — device parity cases for the convolution helpers of the tfjs backend (cpp/cpu_conv.cc
// ↔ cuda/conv.cu): im2col, col2im, depthwise_conv2d and pool2d (max, avg) on NHWC float32, with
// strides, pads, dilation and sizes that are not multiples of anything. They have no op in lib/ops
// (lib/tfjs calls them), so each case calls the kernel directly on both devices.
import * as L from '../../lib';
import { kernel } from '../../lib/core/dispatch';
import { ParityCase, inp, parity, f64, upload } from './parity';

const geomOf = (k: number[], s: number[], p: number[], d: number[], o: number[]): number[] => [...k, ...s, ...p, ...d, ...o];

export function convCases(): ParityCase[] {
  const out: ParityCase[] = [];
  // x [2, 13, 11, 5], 3x3 taps, stride 2, pads 1/1, dilation 1 -> 7 x 6; and 2x3 taps, stride 1, dilation 2.
  const x = inp([2, 13, 11, 5], 'float32', 1500);
  const shapes = [
    { name: '3x3 s2 p1', g: geomOf([3, 3], [2, 2], [1, 1], [1, 1], [7, 6]), K: 3 * 3 * 5, OH: 7, OW: 6 },
    { name: '2x3 s1 d2 p0', g: geomOf([2, 3], [1, 1], [0, 0], [2, 2], [11, 7]), K: 2 * 3 * 5, OH: 11, OW: 7 },
  ];
  for (const s of shapes) {
    const rows = 2 * s.OH * s.OW;
    out.push(
      parity('conv', `im2col f32 ${s.name}`, 'float32', (dev) =>
        L.tidy(() => {
          const cols = L.empty([rows, s.K], { device: dev });
          kernel('im2col', [cols, upload(x, dev), s.g]);
          return { cols: f64(cols) };
        }),
      ),
    );
    const c = inp([rows, s.K], 'float32', 1501);
    out.push(
      parity('conv', `col2im f32 ${s.name}`, 'float32', (dev) =>
        L.tidy(() => {
          const dx = L.empty([2, 13, 11, 5], { device: dev });
          kernel('col2im', [dx, upload(c, dev), s.g]);
          return { dx: f64(dx) };
        }),
      ),
    );
    for (const op of ['max', 'avg'])
      out.push(
        parity('conv', `pool2d ${op} f32 ${s.name}`, 'float32', (dev) =>
          L.tidy(() => {
            const y = L.empty([2, s.OH, s.OW, 5], { device: dev });
            kernel('pool2d', [y, upload(x, dev), op, s.g]);
            return { y: f64(y) };
          }),
        ),
      );
    const w = inp([s.g[0], s.g[1], 5, 2], 'float32', 1502);
    out.push(
      parity('conv', `depthwise_conv2d f32 ${s.name} M=2`, 'float32', (dev) =>
        L.tidy(() => {
          const y = L.empty([2, s.OH, s.OW, 10], { device: dev });
          kernel('depthwise_conv2d', [y, upload(x, dev), upload(w, dev), s.g]);
          return { y: f64(y) };
        }),
      ),
    );
  }
  return out;
}
