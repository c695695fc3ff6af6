// progress.ts — the one progress display of the application (training steps, evaluation answers,
// GPT-data requests): a cli-progress bar on a terminal, an occasional plain line otherwise (logs, CI),
// or nothing. Callers pass the figures they want shown as ready-made strings ("loss 0.1234").

export type ProgressMode = 'auto' | 'bar' | 'plain' | 'none';

export interface ProgressOptions {
  /** 'auto' (default): a bar when stderr is a terminal, plain lines otherwise. */
  mode?: ProgressMode;
  label: string;
  total: number;
  /** Items already finished before this run (a resumed run); the ETA counts only this run's pace. */
  done?: number;
  /** Plain mode: a line on the first item, every `every` items and on the last (default total / 20). */
  every?: number;
  /** Word before the count in plain lines, e.g. 'step ' → "train step 3/10". */
  unit?: string;
  /** Where plain lines go (default: stderr). */
  log?: (line: string) => void;
}

/** Seconds as a short duration ("42s", "3m07s", "2h05m"); '?' when unknown. */
export function formatDuration(s: number): string {
  if (!Number.isFinite(s) || s < 0) return '?';
  if (s < 60) return `${s.toFixed(0)}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(Math.round(s % 60)).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}

export class Progress {
  private readonly mode: 'bar' | 'plain' | 'none';
  private readonly every: number;
  private readonly log: (line: string) => void;
  private readonly start: number;
  private readonly t0 = Date.now();
  private bar: import('cli-progress').SingleBar | null = null;
  private value: number;

  constructor(private readonly o: ProgressOptions) {
    const mode = o.mode ?? 'auto';
    this.mode = mode === 'auto' ? (process.stderr.isTTY ? 'bar' : 'plain') : mode;
    this.start = this.value = o.done ?? 0;
    this.every = o.every ?? Math.max(1, Math.ceil(o.total / 20));
    this.log = o.log ?? ((line) => process.stderr.write(line + '\n'));
    if (this.mode === 'bar' && o.total > 0) {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const cp = require('cli-progress') as typeof import('cli-progress');
      this.bar = new cp.SingleBar(
        { format: `${o.label} |{bar}| {value}/{total}{extra} | ETA {etaText}`, barsize: 24, hideCursor: true, fps: 5 },
        cp.Presets.shades_classic,
      );
      this.bar.start(o.total, this.value, { extra: '', etaText: '?' });
    }
  }

  /** Seconds left at this run's pace so far (NaN before the first item). */
  eta(): number {
    const done = this.value - this.start;
    return done > 0 ? ((Date.now() - this.t0) / 1000 / done) * (this.o.total - this.value) : NaN;
  }

  /** Moves to `value` items done, showing `fields` beside the count. */
  update(value: number, fields: string[] = []): void {
    this.value = value;
    const extra = fields.map((f) => ` | ${f}`).join('');
    const eta = formatDuration(this.eta());
    if (this.bar) this.bar.update(value, { extra, etaText: eta });
    else if (this.mode === 'plain' && (value % this.every === 0 || value === this.o.total || value === this.start + 1))
      this.log(`${this.o.label} ${this.o.unit ?? ''}${value}/${this.o.total}${extra} | ETA ${eta}`);
  }

  tick(n = 1, fields: string[] = []): void {
    this.update(this.value + n, fields);
  }

  stop(): void {
    this.bar?.stop();
    this.bar = null;
  }
}
