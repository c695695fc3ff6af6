// loss_plot.test.ts — the loss plot's axes fall on round values (1, 2 or 5 x 10^k, whole steps) on linear
// and log axes, and a legend names the raw and smoothed lines; the tick helpers of lib/app/util/png_chart.ts.
import t from 'tap';
import { PNG } from 'pngjs';
import { drawLossPlot, SMOOTH_COLOUR, RAW_COLOUR } from '../../../lib/app/train/loss_plot';
import { formatTick, logTicks, niceTicks } from '../../../lib/app/util/png_chart';

/** v is m x 10^k with m in {1, 2, 5} (or 0). */
const isRound = (v: number): boolean => {
  if (v === 0) return true;
  const e = Math.floor(Math.log10(Math.abs(v)) + 1e-9);
  const m = Math.abs(v) / 10 ** e;
  return [1, 2, 5, 10].some((r) => Math.abs(m - r) < 1e-6);
};
/** Every tick is a whole multiple of one round step. */
const evenlyRound = (ticks: number[]): boolean => {
  if (ticks.length < 2) return true;
  const step = ticks[1] - ticks[0];
  return isRound(Number(step.toPrecision(6))) && ticks.every((v) => Math.abs(v / step - Math.round(v / step)) < 1e-6);
};

t.test('niceTicks / logTicks / formatTick', async (t) => {
  t.same(niceTicks(0, 1), [0, 0.2, 0.4, 0.6, 0.8, 1]);
  t.same(niceTicks(2.3, 7.9), [3, 4, 5, 6, 7]);
  t.same(niceTicks(1.67, 3.06, 6), [1.8, 2, 2.2, 2.4, 2.6, 2.8, 3]);
  t.same(niceTicks(1, 250, 6, true), [50, 100, 150, 200, 250]);
  t.same(niceTicks(1, 3, 6, true), [1, 2, 3], 'integer steps never go below 1');
  t.same(niceTicks(5, 5), [5]);
  t.same(niceTicks(1e10, 1e10 + 1e-6), [1e10], 'a range below float resolution');
  for (const [lo, hi] of [
    [0.013, 0.0171],
    [-3, 4],
    [0, 0.001],
    [97, 1234],
  ])
    t.ok(evenlyRound(niceTicks(lo, hi)), `${lo}..${hi}: ${niceTicks(lo, hi)}`);
  t.same(logTicks(0.03, 7), [0.05, 0.1, 0.2, 0.5, 1, 2, 5]);
  t.same(logTicks(1e-5, 10), [1e-5, 1e-4, 1e-3, 0.01, 0.1, 1, 10], 'many decades: powers of ten');
  t.same(logTicks(2, 3.5), [2, 2.5, 3, 3.5], 'under a factor of two: the linear round ticks');
  t.same([0.2, 1500, 0.0002, 3e6, 2.5].map(formatTick), ['0.2', '1500', '2e-4', '3e6', '2.5']);
});

const count = (png: PNG, c: number[], x0 = 0, x1 = png.width): number => {
  let n = 0;
  for (let y = 0; y < png.height; y++)
    for (let x = x0; x < x1; x++) {
      const i = (y * png.width + x) * 4;
      if (png.data[i] === c[0] && png.data[i + 1] === c[1] && png.data[i + 2] === c[2]) n++;
    }
  return n;
};

t.test('linear axis: round ticks, legend with the smoothed line', async (t) => {
  const pts = Array.from({ length: 120 }, (_, i) => ({ step: i + 1, loss: 3.1 - i * 0.011 + 0.05 * Math.sin(i) }));
  const { png, layout } = drawLossPlot(pts, { width: 640, height: 400 });
  t.equal(layout.logY, false);
  t.ok(layout.xTicks.length >= 3 && layout.yTicks.length >= 3, `ticks ${layout.xTicks} / ${layout.yTicks}`);
  t.ok(evenlyRound(layout.xTicks) && layout.xTicks.every(Number.isInteger), `x ticks are whole round steps: ${layout.xTicks}`);
  t.ok(evenlyRound(layout.yTicks), `y ticks are round: ${layout.yTicks}`);
  t.same(layout.legend, ['loss (each step)', 'smoothed (ema 0.9)']);
  const img = PNG.sync.read(png);
  // the legend sits in the top-right corner: both line colours appear there
  const corner = (c: number[]): number => {
    let n = 0;
    for (let y = 30; y < 70; y++)
      for (let x = img.width - 200; x < img.width - 20; x++) {
        const i = (y * img.width + x) * 4;
        if (img.data[i] === c[0] && img.data[i + 1] === c[1] && img.data[i + 2] === c[2]) n++;
      }
    return n;
  };
  t.ok(corner(SMOOTH_COLOUR) >= 20, 'legend sample of the smoothed line');
  t.ok(corner(RAW_COLOUR) >= 20, 'legend sample of the raw line');
  t.ok(count(img, SMOOTH_COLOUR) > 200, 'smoothed curve drawn');
});

t.test('log axis: 1-2-5 ticks; few points: raw line only in the legend', async (t) => {
  const pts = Array.from({ length: 200 }, (_, i) => ({ step: i + 1, loss: 6 * Math.exp(-i / 20) + 0.01 }));
  const { layout } = drawLossPlot(pts);
  t.equal(layout.logY, true);
  t.ok(layout.yTicks.length >= 3 && layout.yTicks.every(isRound), `log ticks ${layout.yTicks}`);
  const few = drawLossPlot([
    { step: 1, loss: 2 },
    { step: 2, loss: 1.5 },
    { step: 3, loss: 1.2 },
  ]);
  t.same(few.layout.legend, ['loss (each step)']);
  t.same(few.layout.xTicks, [1, 2, 3]);
  t.same(drawLossPlot([]).layout.legend, [], 'no data: no legend');
});
