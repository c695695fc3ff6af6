// png_chart.ts — the drawing kit behind this project's PNG charts (the training loss plot in
// train/loss_plot.ts, the benchmark ratio chart in bench/chart.ts): an RGB canvas with lines, boxes and
// text in a built-in 5x7 bitmap font, "nice" axis ticks and a legend box, encoded with pngjs.
//
// Decisions:
// - Everything is drawn by hand into a byte buffer: no canvas or font library, so nothing native beyond
//   the engine's own addon and identical pixels on every machine.
// - The font covers digits, lowercase letters (uppercase is drawn as lowercase) and the punctuation that
//   labels use; a character without a glyph draws as a blank.
// - Ticks fall on 1, 2 or 5 x 10^k (linear axes), or on 1, 2, 5 x 10^k per decade on log axes (only the
//   powers of ten when the axis spans many decades), so labels read as round numbers.
import { PNG } from 'pngjs';

export type RGB = [number, number, number];

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
  ',': ['     ', '     ', '     ', '     ', ' ##  ', '  #  ', ' #   '],
  '-': ['     ', '     ', '     ', '#####', '     ', '     ', '     '],
  _: ['     ', '     ', '     ', '     ', '     ', '     ', '#####'],
  '+': ['     ', '  #  ', '  #  ', '#####', '  #  ', '  #  ', '     '],
  '=': ['     ', '     ', '#####', '     ', '#####', '     ', '     '],
  '<': ['   # ', '  #  ', ' #   ', '#    ', ' #   ', '  #  ', '   # '],
  '>': [' #   ', '  #  ', '   # ', '    #', '   # ', '  #  ', ' #   '],
  '/': ['    #', '    #', '   # ', '  #  ', ' #   ', '#    ', '#    '],
  '%': ['##   ', '##  #', '   # ', '  #  ', ' #   ', '#  ##', '   ##'],
  ':': ['     ', ' ##  ', ' ##  ', '     ', ' ##  ', ' ##  ', '     '],
  '(': ['   # ', '  #  ', ' #   ', ' #   ', ' #   ', '  #  ', '   # '],
  ')': [' #   ', '  #  ', '   # ', '   # ', '   # ', '  #  ', ' #   '],
  '[': [' ### ', ' #   ', ' #   ', ' #   ', ' #   ', ' #   ', ' ### '],
  ']': [' ### ', '   # ', '   # ', '   # ', '   # ', '   # ', ' ### '],
  a: ['     ', '     ', ' ### ', '    #', ' ####', '#   #', ' ####'],
  b: ['#    ', '#    ', '# ## ', '##  #', '#   #', '#   #', '#### '],
  c: ['     ', '     ', ' ### ', '#    ', '#    ', '#   #', ' ### '],
  d: ['    #', '    #', ' ## #', '#  ##', '#   #', '#   #', ' ####'],
  e: ['     ', '     ', ' ### ', '#   #', '#####', '#    ', ' ### '],
  f: ['  ## ', ' #  #', ' #   ', '###  ', ' #   ', ' #   ', ' #   '],
  g: ['     ', ' ####', '#   #', '#   #', ' ####', '    #', ' ### '],
  h: ['#    ', '#    ', '# ## ', '##  #', '#   #', '#   #', '#   #'],
  i: ['  #  ', '     ', ' ##  ', '  #  ', '  #  ', '  #  ', ' ### '],
  j: ['   # ', '     ', '  ## ', '   # ', '   # ', '#  # ', ' ##  '],
  k: ['#    ', '#    ', '#  # ', '# #  ', '##   ', '# #  ', '#  # '],
  l: [' ##  ', '  #  ', '  #  ', '  #  ', '  #  ', '  #  ', ' ### '],
  m: ['     ', '     ', '## # ', '# # #', '# # #', '#   #', '#   #'],
  n: ['     ', '     ', '# ## ', '##  #', '#   #', '#   #', '#   #'],
  o: ['     ', '     ', ' ### ', '#   #', '#   #', '#   #', ' ### '],
  p: ['     ', '     ', '#### ', '#   #', '#### ', '#    ', '#    '],
  q: ['     ', '     ', ' ## #', '#  ##', ' ####', '    #', '    #'],
  r: ['     ', '     ', '# ## ', '##  #', '#    ', '#    ', '#    '],
  s: ['     ', '     ', ' ####', '#    ', ' ### ', '    #', '#### '],
  t: [' #   ', ' #   ', '###  ', ' #   ', ' #   ', ' #  #', '  ## '],
  u: ['     ', '     ', '#   #', '#   #', '#   #', '#  ##', ' ## #'],
  v: ['     ', '     ', '#   #', '#   #', '#   #', ' # # ', '  #  '],
  w: ['     ', '     ', '#   #', '#   #', '# # #', '# # #', ' # # '],
  x: ['     ', '     ', '#   #', ' # # ', '  #  ', ' # # ', '#   #'],
  y: ['     ', '     ', '#   #', '#   #', ' ####', '    #', ' ### '],
  z: ['     ', '     ', '#####', '   # ', '  #  ', ' #   ', '#####'],
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
  /** Filled box, corners inclusive. */
  rect(x0: number, y0: number, x1: number, y1: number, c: RGB): void {
    for (let y = Math.round(y0); y <= Math.round(y1); y++) for (let x = Math.round(x0); x <= Math.round(x1); x++) this.set(x, y, c);
  }
  /** Box outline, corners inclusive. */
  frame(x0: number, y0: number, x1: number, y1: number, c: RGB): void {
    this.line(x0, y0, x1, y0, c);
    this.line(x1, y0, x1, y1, c);
    this.line(x1, y1, x0, y1, c);
    this.line(x0, y1, x0, y0, c);
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
  /** Text in the 5x7 font (6 px advance per character times `scale`); (x, y) is the top-left corner. */
  text(x: number, y: number, s: string, c: RGB, scale = 1): void {
    let cx = Math.round(x);
    for (const ch of s) {
      const g = FONT[ch] ?? FONT[ch.toLowerCase()];
      if (g)
        for (let r = 0; r < 7; r++)
          for (let k = 0; k < 5; k++)
            if (g[r][k] === '#') this.rect(cx + k * scale, y + r * scale, cx + k * scale + scale - 1, y + r * scale + scale - 1, c);
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

/** Short number label: round values as written (0.2, 1500), exponent form for very small/large ones. */
export function formatTick(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e5 || a < 1e-3) return Number(v.toPrecision(3)).toExponential().replace('e+', 'e');
  if (Number.isInteger(v)) return String(v);
  return String(Number(v.toPrecision(3)));
}

/** Tick values on a linear axis over [lo, hi]: the multiples of a 1, 2 or 5 x 10^k step that fall inside,
 *  the step chosen so their count is nearest `target` (at least 2 when the range allows). `integer`: steps
 *  of at least 1. */
export function niceTicks(lo: number, hi: number, target = 5, integer = false): number[] {
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) return [];
  if (hi < lo) [lo, hi] = [hi, lo];
  if (hi - lo <= Math.max(Math.abs(lo), Math.abs(hi)) * 1e-12) return [lo];
  const count = (step: number): number => Math.floor(hi / step + 1e-9) - Math.ceil(lo / step - 1e-9) + 1;
  const e0 = Math.floor(Math.log10((hi - lo) / Math.max(1, target)));
  let best = 0;
  for (let e = e0 - 1; e <= e0 + 1; e++)
    for (const m of [1, 2, 5]) {
      const step = m * 10 ** e;
      if (integer && step < 1) continue;
      const n = count(step);
      if (n > 100) continue;
      const score = (s: number): number => (count(s) >= 2 ? 0 : 1000) + Math.abs(count(s) - target);
      if (!best || score(step) < score(best)) best = step;
    }
  if (!best) best = integer ? Math.max(1, 10 ** Math.ceil(Math.log10(hi - lo))) : hi - lo;
  const decimals = Math.min(20, Math.max(0, -Math.floor(Math.log10(best)) + 1));
  const out: number[] = [];
  for (let k = Math.ceil(lo / best - 1e-9); k * best <= hi + best * 1e-9; k++) {
    const v = Number((k * best).toFixed(decimals));
    if (out[out.length - 1] !== v) out.push(v);
  }
  return out;
}

/** Tick values on a log axis over [lo, hi] (both > 0): 1, 2, 5 x 10^k, or only 10^k over many decades;
 *  a span too short for two of them gets the linear axis's round ticks instead. */
export function logTicks(lo: number, hi: number): number[] {
  if (!(lo > 0) || !(hi > 0)) return [];
  if (hi < lo) [lo, hi] = [hi, lo];
  const decades = Math.log10(hi / lo);
  const mults = decades > 4 ? [1] : [1, 2, 5];
  const out: number[] = [];
  for (let e = Math.floor(Math.log10(lo)) - 1; e <= Math.ceil(Math.log10(hi)); e++)
    for (const m of mults) {
      const v = Number((m * 10 ** e).toPrecision(6));
      if (v >= lo * (1 - 1e-9) && v <= hi * (1 + 1e-9)) out.push(v);
    }
  if (out.length >= 2 || decades > 4) return out;
  return niceTicks(lo, hi, 4);
}

export interface LegendEntry {
  label: string;
  color: RGB;
  /** Line thickness of the sample (default 1); 0 draws a filled swatch instead. */
  thick?: number;
}

/** A legend box with a sample line and a label per entry, its top-right corner at (right, top). */
export function drawLegend(cv: Canvas, right: number, top: number, entries: LegendEntry[], ink: RGB = [30, 30, 30]): void {
  if (!entries.length) return;
  const sample = 18;
  const w = 6 + sample + 6 + Math.max(...entries.map((e) => cv.textWidth(e.label))) + 6;
  const h = 4 + entries.length * 12;
  const x0 = right - w;
  cv.rect(x0, top, right, top + h, [255, 255, 255]);
  cv.frame(x0, top, right, top + h, [180, 180, 180]);
  entries.forEach((e, i) => {
    const y = top + 4 + i * 12;
    if (e.thick === 0) cv.rect(x0 + 6, y + 1, x0 + 6 + sample, y + 6, e.color);
    else cv.line(x0 + 6, y + 3, x0 + 6 + sample, y + 3, e.color, e.thick ?? 1);
    cv.text(x0 + 6 + sample + 6, y, e.label, ink);
  });
}
