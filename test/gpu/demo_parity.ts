// demo_parity.ts — the bundled demo (`npm start`: the tiny LLaVA, stage 1 then stage 2 on generated
// images) trained on the device under test and on the CPU from the same seed and data. Every optimizer
// step's loss must agree within the tolerance below: issue 16's bar "a training run of the bundled demo
// on cuda reaches the same losses as on the CPU".
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import type { Device } from '../../lib';
import { runDemo } from '../../lib/app/train/demo';
import type { StepRecord } from '../../lib/app/train/trainer';

/** |device - cpu| <= RTOL * max(1, |cpu|) per step: f32 training, the two devices differ only in summation order. */
export const DEMO_RTOL = 2e-3;

export async function demoParity(dev: Device, steps: number): Promise<{ name: string; pass: boolean; detail: string }> {
  const name = `demo training on ${dev} vs cpu: stage 1 and stage 2, ${steps} steps each, per-step losses`;
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'llava-demo-parity-'));
  try {
    const run = (device: Device) =>
      runDemo({ device, stage1Steps: steps, stage2Steps: steps, outDir: path.join(tmp, device), progress: 'none', log: () => {} });
    const ref = await run('cpu');
    const got = await run(dev);
    let worst = 0;
    let where = '';
    const problems: string[] = [];
    for (const stage of ['stage1', 'stage2'] as const) {
      const a: StepRecord[] = got[stage].history;
      const b: StepRecord[] = ref[stage].history;
      if (a.length !== b.length) problems.push(`${stage}: ${a.length} steps on ${dev}, ${b.length} on cpu`);
      for (let i = 0; i < Math.min(a.length, b.length); i++) {
        const err = Math.abs(a[i].loss - b[i].loss) / Math.max(1, Math.abs(b[i].loss));
        if (!(err <= worst)) {
          worst = err;
          where = `${stage} step ${b[i].step}: ${a[i].loss.toFixed(6)} vs ${b[i].loss.toFixed(6)}`;
        }
      }
    }
    const pass = problems.length === 0 && worst <= DEMO_RTOL;
    const last = (r: typeof ref): string => `${r.stage1.lastLoss.toFixed(4)} / ${r.stage2.lastLoss.toFixed(4)}`;
    return {
      name,
      pass,
      detail: [
        ...problems,
        `worst relative loss difference ${worst.toExponential(2)} (${where}; bar ${DEMO_RTOL})`,
        `last losses ${dev} ${last(got)}, cpu ${last(ref)}; answers right ${got.correct}/${got.total} vs ${ref.correct}/${ref.total}`,
      ].join('; '),
    };
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}
