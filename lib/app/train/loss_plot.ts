// loss_plot.ts — a loss curve as a PNG (the trainer's loss.png), drawn with the hand-made canvas of
// util/png_chart.ts and encoded with pngjs.
//
// Layout: white canvas, plot box with light grid lines at round tick values (1, 2 or 5 x 10^k; whole steps
// on the x axis), the raw loss as a thin light line, an exponential moving average on top as a thicker
// dark line when there are enough points, a legend naming both lines in the top-right corner, and a title.
// A log-scale y axis is used when the loss spans more than a factor of 20, which is the usual shape of a
// curve that overfits a small set; its ticks are 1, 2, 5 x 10^k.
import * as fs from 'fs';
import { Canvas, drawLegend, formatTick, logTicks, niceTicks, type LegendEntry, type RGB } from '../util/png_chart';
import { checkOptions, optionKeys } from '../../options';

export { Canvas, formatTick } from '../util/png_chart';

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

const PLOT_KEYS = optionKeys<PlotOptions>({ width: true, height: true, title: true, logY: true, smoothing: true, markers: true });

/** Colours of the two lines (exported for tests that look for them). */
export const RAW_COLOUR: RGB = [150, 180, 230];
export const RAW_ONLY_COLOUR: RGB = [30, 80, 200];
export const SMOOTH_COLOUR: RGB = [20, 50, 160];

/** What the plot drew, for tests: the tick values per axis and the legend labels. */
export interface PlotLayout {
  xTicks: number[];
  yTicks: number[];
  logY: boolean;
  legend: string[];
}

/** Render (step, loss) points to PNG bytes. Non-finite losses are skipped. */
export function renderLossPlot(points: { step: number; loss: number }[], opts: PlotOptions = {}): Buffer {
  return drawLossPlot(points, opts).png;
}

/** renderLossPlot, also returning what was drawn. */
export function drawLossPlot(points: { step: number; loss: number }[], opts: PlotOptions = {}): { png: Buffer; layout: PlotLayout } {
  checkOptions('lossPlot', opts, PLOT_KEYS);
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
  const layout: PlotLayout = { xTicks: [], yTicks: [], logY: false, legend: [] };
  if (opts.title) cv.text((W - cv.textWidth(opts.title, 2)) / 2, 6, opts.title, ink, 2);
  if (pts.length === 0) {
    cv.text(left + 10, (top + bottom) / 2, 'no data', ink, 2);
    return { png: cv.toPng(), layout };
  }
  const x0 = Math.min(...pts.map((p) => p.step));
  let x1 = Math.max(...pts.map((p) => p.step));
  if (x1 === x0) x1 = x0 + 1;
  const lo = Math.min(...pts.map((p) => p.loss));
  const hi = Math.max(...pts.map((p) => p.loss));
  const log = opts.logY === true ? lo > 0 : opts.logY !== false && lo > 0 && hi / lo > 20;
  layout.logY = log;
  const fy = (v: number): number => (log ? Math.log10(v) : v);
  let y0 = fy(lo);
  let y1 = fy(hi);
  if (y1 - y0 < 1e-12) {
    y0 -= log ? 0.1 : Math.max(0.5, Math.abs(y0) * 0.1);
    y1 += log ? 0.1 : Math.max(0.5, Math.abs(y1) * 0.1);
  } else {
    const pad = (y1 - y0) * 0.05;
    y0 -= pad;
    y1 += pad;
  }
  const px = (s: number): number => left + ((s - x0) / (x1 - x0)) * (right - left);
  const pyRaw = (f: number): number => bottom - ((f - y0) / (y1 - y0)) * (bottom - top);
  const py = (v: number): number => pyRaw(fy(v));
  // grid and ticks at round values
  const xTicks = niceTicks(x0, x1, 6, true).filter((v) => v >= x0 && v <= x1);
  const yTicks = (log ? logTicks(10 ** y0, 10 ** y1) : niceTicks(y0, y1, 6)).filter((v) => (!log || v > 0) && fy(v) >= y0 && fy(v) <= y1);
  layout.xTicks = xTicks;
  layout.yTicks = yTicks;
  for (const v of xTicks) {
    const gx = px(v);
    cv.line(gx, top, gx, bottom, grid);
    cv.line(gx, bottom, gx, bottom + 3, ink);
    const l = formatTick(v);
    cv.text(gx - cv.textWidth(l) / 2, bottom + 6, l, ink);
  }
  for (const v of yTicks) {
    const gy = py(v);
    cv.line(left, gy, right, gy, grid);
    cv.line(left - 3, gy, left, gy, ink);
    const l = formatTick(v);
    cv.text(left - 6 - cv.textWidth(l), gy - 3, l, ink);
  }
  for (const m of opts.markers ?? []) if (m >= x0 && m <= x1) cv.line(px(m), top, px(m), bottom, [200, 120, 120]);
  // axes
  cv.line(left, top, left, bottom, ink);
  cv.line(left, bottom, right, bottom, ink);
  cv.text((left + right) / 2 - cv.textWidth('step') / 2, H - 14, 'step', ink);
  cv.text(4, top - 14, log ? 'loss (log)' : 'loss', ink);
  // curves
  const smoothing = opts.smoothing ?? (pts.length > 30 ? 0.9 : 0);
  const raw: RGB = smoothing > 0 ? RAW_COLOUR : RAW_ONLY_COLOUR;
  for (let i = 1; i < pts.length; i++) cv.line(px(pts[i - 1].step), py(pts[i - 1].loss), px(pts[i].step), py(pts[i].loss), raw, 1);
  if (pts.length === 1) cv.rect(px(pts[0].step) - 2, py(pts[0].loss) - 2, px(pts[0].step) + 2, py(pts[0].loss) + 2, raw);
  const legend: LegendEntry[] = [{ label: 'loss (each step)', color: raw, thick: 2 }];
  if (smoothing > 0) {
    let ema = pts[0].loss;
    let prev = { x: px(pts[0].step), y: py(ema) };
    for (let i = 1; i < pts.length; i++) {
      ema = smoothing * ema + (1 - smoothing) * pts[i].loss;
      const cur = { x: px(pts[i].step), y: py(ema) };
      cv.line(prev.x, prev.y, cur.x, cur.y, SMOOTH_COLOUR, 2);
      prev = cur;
    }
    legend.push({ label: `smoothed (ema ${formatTick(smoothing)})`, color: SMOOTH_COLOUR, thick: 2 });
  }
  drawLegend(cv, right - 4, top + 4, legend, ink);
  layout.legend = legend.map((e) => e.label);
  return { png: cv.toPng(), layout };
}

/** Write the loss plot to `file` (PNG). */
export function writeLossPlot(file: string, points: { step: number; loss: number }[], opts: PlotOptions = {}): void {
  fs.writeFileSync(file, renderLossPlot(points, opts));
}
