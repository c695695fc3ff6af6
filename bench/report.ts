// report.ts — what `npm run bench` shows after its JSON lines: a table a person can read (case, the
// engine's time and throughput, the baseline's, and the ratio), and with --out FILE a PNG bar chart of
// the ratios beside FILE.
//
// The rows are the JSON lines that carry a case (`op` with a time or a ratio); `skipped` lines become
// notes under the table. ratio = baseline_ms / median_ms, so a bar right of the 1.0 line means the
// engine is faster. The chart uses a log axis (a 0.5x and a 2x bar have the same length) and draws,
// for the CPU's fused ops, the ratio against the engine's own composite as a second, thinner bar.
// Drawing primitives come from lib/app/util/png_chart.ts, shared with the trainer's loss plot.
import * as fs from 'fs';
import * as path from 'path';
import { Canvas, drawLegend, formatTick, logTicks, type RGB } from '../lib/app/util/png_chart';
import { round } from './harness';

type Rec = Record<string, unknown>;

export interface Row {
  label: string;
  device: string;
  ours: string;
  baseline: string;
  ratio: number | null;
  /** With --rounds: the lowest and highest per-round ratio. */
  range: [number, number] | null;
  composite: number | null;
}

const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);

/** 3 significant digits, no exponent for everyday sizes. */
export function fmt(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e6 || a < 1e-3) return v.toExponential(2);
  return String(Number(v.toPrecision(3)));
}

/** The throughput figure of a record, as "123 GB/s" (gflops, tflops, gbps or tokens_per_s). */
function throughputText(r: Rec): string {
  const units: [string, string][] = [
    ['tflops', 'TFLOP/s'],
    ['gflops', 'GFLOP/s'],
    ['gbps', 'GB/s'],
    ['tokens_per_s', 'tok/s'],
  ];
  for (const [k, u] of units) {
    const v = num(r[k]);
    if (v !== null) return `${fmt(v)} ${u}`;
  }
  return '';
}

/** The short name of a baseline: "numpy 2.4.6 (scipy-openblas)" -> "numpy 2.4.6". */
function shortName(name: string): string {
  return name.replace(/\s*\(.*$/, '');
}

const median = (v: number[]): number => {
  const s = [...v].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/**
 * One line per case from the lines of its rounds (those with a numeric `round`): the last round's line
 * with `rounds`, the medians of median_ms, baseline_ms, ratio and the other ratios over the rounds, the
 * throughput of the median time, and ratio_min / ratio_max. Each round compares the peer's and our times
 * of that round, so the ratio is the median of per-round ratios, not a ratio of medians.
 */
export function combineRounds(records: Rec[]): Rec[] {
  const groups = new Map<string, Rec[]>();
  for (const r of records) {
    if (typeof r.round !== 'number' || typeof r.op !== 'string' || 'skipped' in r || num(r.median_ms) === null) continue;
    const key = [r.op, r.scenario, r.dtype, r.device, r.shape].join('|');
    groups.set(key, [...(groups.get(key) ?? []), r]);
  }
  const out: Rec[] = [];
  for (const rs of groups.values()) {
    const { round: _, ...last } = rs[rs.length - 1];
    const med = (k: string): number | null => {
      const v = rs.map((r) => num(r[k])).filter((x): x is number => x !== null);
      return v.length ? round(median(v)) : null;
    };
    const ms = med('median_ms')!;
    const rec: Rec = { ...last, rounds: rs.length, median_ms: ms };
    for (const k of ['gflops', 'tflops', 'gbps', 'tokens_per_s'])
      if (num(last[k]) !== null) rec[k] = round((num(last[k])! * num(last.median_ms)!) / ms);
    for (const k of ['baseline_ms', 'ratio', 'composite_ms', 'composite_ratio', 'f32_ms', 'vs_our_f32']) if (k in last) rec[k] = med(k);
    const bt = last.baseline_throughput as Rec | undefined;
    const [bms, lastB] = [num(rec.baseline_ms), num(last.baseline_ms)];
    if (bt && bms !== null && lastB !== null)
      rec.baseline_throughput = Object.fromEntries(Object.entries(bt).map(([k, v]) => [k, num(v) === null ? v : round((num(v)! * lastB) / bms)]));
    const ratios = rs.map((r) => num(r.ratio)).filter((x): x is number => x !== null);
    if (ratios.length) Object.assign(rec, { ratio_min: Math.min(...ratios), ratio_max: Math.max(...ratios) });
    out.push(rec);
  }
  return out;
}

/** Table rows from the emitted JSON lines (case lines only; with --rounds, the combined lines). */
export function rowsOf(records: Rec[]): Row[] {
  const rows: Row[] = [];
  for (const r of records) {
    if (typeof r.op !== 'string' || 'skipped' in r || typeof r.round === 'number') continue;
    const label = [r.op, r.scenario, r.shape].filter((x) => typeof x === 'string' && x).join(' ');
    const device = [r.device, r.dtype === 'float32' ? 'f32' : r.dtype === 'bfloat16' ? 'bf16' : r.dtype].filter(Boolean).join(' ');
    if (typeof r.error === 'string') {
      rows.push({ label, device, ours: `error: ${r.error}`, baseline: '', ratio: null, range: null, composite: null });
      continue;
    }
    let ours = '';
    const ms = num(r.median_ms);
    if (ms !== null) ours = `${fmt(ms)} ms`;
    else if (num(r.ms_per_layer) !== null) ours = `${fmt(num(r.ms_per_layer)!)} ms/layer`;
    const tp = throughputText(r);
    if (tp) ours += ` (${tp})`;
    let baseline = '';
    const bname = typeof r.baseline === 'string' ? shortName(r.baseline) : '';
    const bms = num(r.baseline_ms) ?? num(r.baseline_ms_per_layer);
    if (bname) baseline = bms !== null ? `${bname}: ${fmt(bms)} ms${num(r.baseline_ms_per_layer) !== null ? '/layer' : ''}` : `${bname}: -`;
    else if (r.note) baseline = String(r.note);
    const lo = num(r.ratio_min),
      hi = num(r.ratio_max);
    const range: [number, number] | null = lo !== null && hi !== null ? [lo, hi] : null;
    rows.push({ label, device, ours, baseline, ratio: num(r.ratio), range, composite: num(r.composite_ratio) });
  }
  return rows;
}

/** The readable table: one line per case, then notes for what was skipped. */
export function formatTable(records: Rec[]): string {
  const rows = rowsOf(records);
  const hasComposite = rows.some((r) => r.composite !== null);
  const head = ['case', 'device', 'ours', 'baseline', 'ratio', ...(hasComposite ? ['vs composite'] : [])];
  const ratio = (v: number | null): string => (v === null ? '-' : `${fmt(v)}x`);
  const body = rows.map((r) => [
    r.label,
    r.device,
    r.ours,
    r.baseline,
    ratio(r.ratio) + (r.range ? ` (${fmt(r.range[0])}-${fmt(r.range[1])})` : ''),
    ...(hasComposite ? [r.composite === null ? '' : ratio(r.composite)] : []),
  ]);
  const width = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const right = new Set([4, 5]);
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (right.has(i) ? c.padStart(width[i]) : c.padEnd(width[i])))
      .join('  ')
      .trimEnd();
  const out = [line(head), width.map((w) => '-'.repeat(w)).join('  '), ...body.map(line)];
  out.push('ratio = baseline ms / ours (> 1: llava-node is faster)' + (hasComposite ? "; vs composite: against the engine's own unfused ops" : ''));
  const rounds = records.find((r) => typeof r.rounds === 'number')?.rounds;
  if (rounds) out.push(`medians over ${rounds} rounds; in brackets the range of the per-round ratios`);
  for (const r of records)
    if (typeof r.skipped === 'string') out.push(`skipped ${r.skipped}${r.device ? ` (${r.device})` : ''}: ${String(r.reason ?? '')}`);
  return out.join('\n');
}

/** Where the chart of `--out FILE` goes: FILE with a .png extension (FILE.chart.png when FILE is a .png). */
export function chartPath(out: string): string {
  const ext = path.extname(out);
  if (ext.toLowerCase() === '.png') return out.slice(0, -ext.length) + '.chart.png';
  return (ext ? out.slice(0, -ext.length) : out) + '.png';
}

const GREEN: RGB = [60, 160, 80];
const RED: RGB = [205, 70, 60];
const GREY: RGB = [120, 130, 170];

/** A horizontal bar chart of the ratios (log axis centred on 1) as PNG bytes; null when no row has one. */
export function renderRatioChart(records: Rec[], title = 'llava-node vs baseline: ratio = baseline ms / ours'): Buffer | null {
  const rows = rowsOf(records).filter((r) => r.ratio !== null || r.composite !== null);
  if (!rows.length) return null;
  const maxChars = 46;
  const labels = rows.map((r) => {
    const l = `${r.label} ${r.device}`;
    return l.length > maxChars ? l.slice(0, maxChars - 2) + '..' : l;
  });
  const rowH = 18;
  const left = 12 + Math.max(...labels.map((l) => l.length)) * 6;
  const W = Math.max(720, left + 460);
  const right = W - 50;
  const top = 40;
  const hasComposite = rows.some((r) => r.composite !== null);
  const H = top + rows.length * rowH + 40 + (hasComposite ? 44 : 32);
  const cv = new Canvas(W, H);
  const ink: RGB = [30, 30, 30];
  cv.text((W - cv.textWidth(title, 2)) / 2, 8, title, ink, 2);
  const vals = rows.flatMap((r) => [r.ratio, r.composite]).filter((v): v is number => v !== null && v > 0);
  const lo = Math.min(0.5, ...vals) / 1.25;
  const hi = Math.max(2, ...vals) * 1.5;
  const px = (v: number): number => left + ((Math.log10(v) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))) * (right - left);
  const bottom = top + rows.length * rowH;
  for (const t of logTicks(lo, hi)) {
    const x = px(t);
    cv.line(x, top - 4, x, bottom, [225, 225, 225]);
    const l = `${formatTick(t)}x`;
    cv.text(x - cv.textWidth(l) / 2, bottom + 6, l, ink);
  }
  cv.line(px(1), top - 4, px(1), bottom, ink);
  cv.text((left + right) / 2 - cv.textWidth('<- slower   faster ->') / 2, bottom + 22, '<- slower   faster ->', ink);
  rows.forEach((r, i) => {
    const y = top + i * rowH;
    cv.text(6, y + 5, labels[i], ink);
    if (r.ratio !== null && r.ratio > 0) {
      const x = px(r.ratio);
      cv.rect(Math.min(x, px(1)), y + 3, Math.max(x, px(1)), y + (r.composite !== null ? 10 : 14), r.ratio >= 1 ? GREEN : RED);
      const l = `${fmt(r.ratio)}x`;
      cv.text(r.ratio >= 1 ? x + 4 : x - 4 - cv.textWidth(l), y + 4, l, ink);
    }
    if (r.composite !== null && r.composite > 0) {
      const x = px(r.composite);
      cv.rect(Math.min(x, px(1)), y + 12, Math.max(x, px(1)), y + 15, GREY);
    }
  });
  const legend = [
    { label: 'faster than baseline', color: GREEN, thick: 0 },
    { label: 'slower than baseline', color: RED, thick: 0 },
    ...(hasComposite ? [{ label: 'vs own composite', color: GREY, thick: 0 }] : []),
  ];
  drawLegend(cv, right, bottom + 36, legend, ink);
  return cv.toPng();
}

/** Print the table (unless jsonOnly) and, with an --out file, write the chart beside it. */
export function finishReport(records: Rec[], o: { out: string | null; jsonOnly: boolean }): void {
  if (!o.jsonOnly && rowsOf(records).length) console.log(`\n${formatTable(records)}`);
  if (o.out) {
    const png = renderRatioChart(records);
    if (png) {
      const file = chartPath(o.out);
      fs.writeFileSync(file, png);
      if (!o.jsonOnly) console.log(`chart of the ratios: ${file}`);
    }
  }
}
