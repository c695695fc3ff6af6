// plot.ts — a loss curve as a PNG, drawn by hand into an RGB buffer and encoded with pngjs.
//
// Layout: white canvas, plot box with light grid lines (5 per axis), the raw loss as a thin light line,
// an exponential moving average on top as a thicker dark line when there are enough points, axis tick
// labels (min/mid/max of each axis) and a title, in a built-in 5x7 bitmap font (digits, a few letters and
// punctuation: enough for numbers and short labels; unknown characters draw as blanks). A log-scale y
// axis is used when the loss spans more than a factor of 20, which is the usual shape of a curve that
// overfits a small set.
import * as fs from 'fs';
import { PNG } from 'pngjs';

type RGB = [number, number, number];

// 5x7 glyphs, one string per row, '#' = ink.
const FONT: Record<string, string[]> = {
  '0': [' ### ', '#   #', '#  ##', '# # #', '##  #', '#   #', ' ### '],
  '1': ['  #  ', ' ##  ', '  #  ', '  #  ', '  #  ', '  #  ', ' ### '],
  '2': [' ### ', '#   #', '    #', '   # ', '  #  ', ' #   ', '#####'],
  '3': ['#####', '   # ', '  #  ', '   # ', '    #', '#   #', ' ### '],
  '4': ['   # ', '  ## ', ' # # ', '#  # ', '#####', '   # ', '   # '],
  '5': ['#####', '#    ', '#### ', '    #', '    #', '#   #', ' ### '],
  '6': ['  ## ', ' #   ', '#    ', '#### ', '#   #', '#   #', ' ### '],
  '7': ['#####', '    #', '   # ', '  #  ', ' #   ', ' #   ', ' #   '],
  '8': [' ### ', '#   #', '#   #', ' ### ', '#   #', '#   #', ' ### '],
  '9': [' ### ', '#   #', '#   #', ' ####', '    #', '   # ', ' ##  '],
  '.': ['     ', '     ', '     ', '     ', '     ', ' ##  ', ' ##  '],
  '-': ['     ', '     ', '     ', '#####', '     ', '     ', '     '],
  '+': ['     ', '  #  ', '  #  ', '#####', '  #  ', '  #  ', '     '],
  ':': ['     ', ' ##  ', ' ##  ', '     ', ' ##  ', ' ##  ', '     '],
  '(': ['   # ', '  #  ', ' #   ', ' #   ', ' #   ', '  #  ', '   # '],
  ')': [' #   ', '  #  ', '   # ', '   # ', '   # ', '  #  ', ' #   '],
  a: ['     ', '     ', ' ### ', '    #', ' ####', '#   #', ' ####'],
  c: ['     ', '     ', ' ### ', '#    ', '#    ', '#   #', ' ### '],
  d: ['    #', '    #', ' ## #', '#  ##', '#   #', '#   #', ' ####'],
  e: ['     ', '     ', ' ### ', '#   #', '#####', '#    ', ' ### '],
  g: ['     ', ' ####', '#   #', '#   #', ' ####', '    #', ' ### '],
  h: ['#    ', '#    ', '# ## ', '##  #', '#   #', '#   #', '#   #'],
  i: ['  #  ', '     ', ' ##  ', '  #  ', '  #  ', '  #  ', ' ### '],
  l: [' ##  ', '  #  ', '  #  ', '  #  ', '  #  ', '  #  ', ' ### '],
  m: ['     ', '     ', '## # ', '# # #', '# # #', '#   #', '#   #'],
  n: ['     ', '     ', '# ## ', '##  #', '#   #', '#   #', '#   #'],
  o: ['     ', '     ', ' ### ', '#   #', '#   #', '#   #', ' ### '],
  p: ['     ', '     ', '#### ', '#   #', '#### ', '#    ', '#    '],
  r: ['     ', '     ', '# ## ', '##  #', '#    ', '#    ', '#    '],
  s: ['     ', '     ', ' ####', '#    ', ' ### ', '    #', '#### '],
  t: [' #   ', ' #   ', '###  ', ' #   ', ' #   ', ' #  #', '  ## '],
  u: ['     ', '     ', '#   #', '#   #', '#   #', '#  ##', ' ## #'],
  v: ['     ', '     ', '#   #', '#   #', '#   #', ' # # ', '  #  '],
  x: ['     ', '     ', '#   #', ' # # ', '  #  ', ' # # ', '#   #'],
  y: ['     ', '     ', '#   #', '#   #', ' ####', '    #', ' ### '],
};

export class Canvas {
  readonly data: Uint8Array;
  constructor(
    readonly width: number,
    readonly height: number,
    bg: RGB = [255, 255, 255],
  ) {
    this.data = new Uint8Array(width * height * 3);
    for (let i = 0; i < width * height; i++) this.data.set(bg, i * 3);
  }
  set(x: number, y: number, c: RGB): void {
    x = Math.round(x);
    y = Math.round(y);
    if (x < 0 || y < 0 || x >= this.width || y >= this.height) return;
    this.data.set(c, (y * this.width + x) * 3);
  }
  rect(x0: number, y0: number, x1: number, y1: number, c: RGB): void {
    for (let y = Math.round(y0); y <= Math.round(y1); y++) for (let x = Math.round(x0); x <= Math.round(x1); x++) this.set(x, y, c);
  }
  /** Bresenham line with a square pen of `thick` pixels. */
  line(x0: number, y0: number, x1: number, y1: number, c: RGB, thick = 1): void {
    x0 = Math.round(x0);
    y0 = Math.round(y0);
    x1 = Math.round(x1);
    y1 = Math.round(y1);
    const dx = Math.abs(x1 - x0);
    const dy = -Math.abs(y1 - y0);
    const sx = x0 < x1 ? 1 : -1;
    const sy = y0 < y1 ? 1 : -1;
    let err = dx + dy;
    const h = Math.floor((thick - 1) / 2);
    for (;;) {
      if (thick <= 1) this.set(x0, y0, c);
      else this.rect(x0 - h, y0 - h, x0 - h + thick - 1, y0 - h + thick - 1, c);
      if (x0 === x1 && y0 === y1) break;
      const e2 = 2 * err;
      if (e2 >= dy) {
        err += dy;
        x0 += sx;
      }
      if (e2 <= dx) {
        err += dx;
        y0 += sy;
      }
    }
  }
  /** Text in the 5x7 font (6 px advance per character times `scale`). */
  text(x: number, y: number, s: string, c: RGB, scale = 1): void {
    let cx = Math.round(x);
    for (const ch of s) {
      const g = FONT[ch] ?? FONT[ch.toLowerCase()];
      if (g)
        for (let r = 0; r < 7; r++)
          for (let k = 0; k < 5; k++) if (g[r][k] === '#') this.rect(cx + k * scale, y + r * scale, cx + k * scale + scale - 1, y + r * scale + scale - 1, c);
      cx += 6 * scale;
    }
  }
  textWidth(s: string, scale = 1): number {
    return s.length * 6 * scale - scale;
  }
  toPng(): Buffer {
    const png = new PNG({ width: this.width, height: this.height, colorType: 2, inputColorType: 2, inputHasAlpha: false });
    png.data = Buffer.from(this.data.buffer, this.data.byteOffset, this.data.byteLength);
    return PNG.sync.write(png, { colorType: 2, inputColorType: 2, inputHasAlpha: false });
  }
}

/** Short number label: 3 significant digits, exponent form for very small/large values. */
export function formatTick(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e5 || a < 1e-3) return v.toExponential(1).replace('e+', 'e');
  if (Number.isInteger(v)) return String(v);
  return String(Number(v.toPrecision(3)));
}

export interface PlotOptions {
  width?: number;
  height?: number;
  title?: string;
  /** 'auto' (default): log when max/min > 20. */
  logY?: boolean | 'auto';
  /** EMA smoothing factor for the overlay line (0 = none); default 0.9 when there are > 30 points. */
  smoothing?: number;
  /** Vertical markers, e.g. stage boundaries: x positions in step units. */
  markers?: number[];
}

/** Render (step, loss) points to PNG bytes. Non-finite losses are skipped. */
export function renderLossPlot(points: { step: number; loss: number }[], opts: PlotOptions = {}): Buffer {
  const W = opts.width ?? 640;
  const H = opts.height ?? 400;
  const cv = new Canvas(W, H);
  const pts = points.filter((p) => Number.isFinite(p.loss) && Number.isFinite(p.step));
  const left = 60;
  const right = W - 20;
  const top = 30;
  const bottom = H - 40;
  const ink: RGB = [30, 30, 30];
  const grid: RGB = [225, 225, 225];
  if (opts.title) cv.text((W - cv.textWidth(opts.title, 2)) / 2, 6, opts.title, ink, 2);
  if (pts.length === 0) {
    cv.text(left + 10, (top + bottom) / 2, 'no data', ink, 2);
    return cv.toPng();
  }
  let x0 = Math.min(...pts.map((p) => p.step));
  let x1 = Math.max(...pts.map((p) => p.step));
  if (x1 === x0) x1 = x0 + 1;
  let lo = Math.min(...pts.map((p) => p.loss));
  let hi = Math.max(...pts.map((p) => p.loss));
  const log = opts.logY === true || (opts.logY !== false && lo > 0 && hi / lo > 20);
  const fy = (v: number): number => (log ? Math.log10(v) : v);
  let y0 = fy(lo);
  let y1 = fy(hi);
  if (y1 - y0 < 1e-12) {
    y0 -= 0.5;
    y1 += 0.5;
  } else {
    const pad = (y1 - y0) * 0.05;
    y0 -= pad;
    y1 += pad;
  }
  const px = (s: number): number => left + ((s - x0) / (x1 - x0)) * (right - left);
  const py = (v: number): number => bottom - ((fy(v) - y0) / (y1 - y0)) * (bottom - top);
  // grid and ticks
  for (let k = 0; k <= 4; k++) {
    const gx = left + (k / 4) * (right - left);
    const gy = top + (k / 4) * (bottom - top);
    cv.line(gx, top, gx, bottom, grid);
    cv.line(left, gy, right, gy, grid);
    const sv = x0 + (k / 4) * (x1 - x0);
    const sl = formatTick(Math.round(sv * 100) / 100);
    cv.text(gx - cv.textWidth(sl) / 2, bottom + 6, sl, ink);
    const yv = y1 - (k / 4) * (y1 - y0);
    const yl = formatTick(log ? 10 ** yv : yv);
    cv.text(left - 6 - cv.textWidth(yl), gy - 3, yl, ink);
  }
  for (const m of opts.markers ?? []) if (m >= x0 && m <= x1) cv.line(px(m), top, px(m), bottom, [200, 120, 120]);
  // axes
  cv.line(left, top, left, bottom, ink);
  cv.line(left, bottom, right, bottom, ink);
  cv.text((left + right) / 2 - cv.textWidth('step') / 2, H - 14, 'step', ink);
  cv.text(4, top - 14, log ? 'loss (log)' : 'loss', ink);
  // curves
  const smoothing = opts.smoothing ?? (pts.length > 30 ? 0.9 : 0);
  const raw: RGB = smoothing > 0 ? [150, 180, 230] : [30, 80, 200];
  for (let i = 1; i < pts.length; i++) cv.line(px(pts[i - 1].step), py(pts[i - 1].loss), px(pts[i].step), py(pts[i].loss), raw, 1);
  if (pts.length === 1) cv.rect(px(pts[0].step) - 2, py(pts[0].loss) - 2, px(pts[0].step) + 2, py(pts[0].loss) + 2, raw);
  if (smoothing > 0) {
    let ema = pts[0].loss;
    let prev = { x: px(pts[0].step), y: py(ema) };
    for (let i = 1; i < pts.length; i++) {
      ema = smoothing * ema + (1 - smoothing) * pts[i].loss;
      const cur = { x: px(pts[i].step), y: py(ema) };
      cv.line(prev.x, prev.y, cur.x, cur.y, [20, 50, 160], 2);
      prev = cur;
    }
  }
  return cv.toPng();
}

/** Write the loss plot to `file` (PNG). */
export function writeLossPlot(file: string, points: { step: number; loss: number }[], opts: PlotOptions = {}): void {
  fs.writeFileSync(file, renderLossPlot(points, opts));
}
