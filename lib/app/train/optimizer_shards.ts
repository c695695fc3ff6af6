// optimizer_shards.ts — optimizer state that resumes under another world size or strategy.
//
// Every optimizer file a checkpoint holds (optimizer.safetensors of a one-process or ddp run, or the
// optimizer.rank-R-of-N.safetensors shards of zero1/2/3) records in its metadata, for each of its leaves in
// order, the piece of the trainable parameters the leaf covers: [parameter index in the trainable list,
// first element inside the parameter, element count]. A whole parameter is [j, 0, numel]; a shard slice is
// part of one. Loading cuts the state again for the pieces of the run that resumes: for each of its leaves
// it reads the saved leaves that overlap it (only those: a rank reads about its own share, not the whole
// state) and copies the overlapping ranges of the moments and master weights. Any layout resumes into any
// other: N ranks into M, zero1 into zero3, sharded into one process. Files written before the pieces were
// recorded load only into the same layout (the leaf list must match, as before).
import type { Tensor } from '../../core/tensor';
import { noGrad } from '../../core/autograd';
import { fromTypedArray } from '../../ops';
import type { AdamW } from '../../optim/adamw';
import { SafetensorsFile } from '../../io/safetensors';
import { loadOptimizer } from './train_state';

export type Piece = [param: number, inParam: number, len: number];
export const PIECES_KEY = 'pieces';

/** The piece of each optimizer leaf, in the optimizer's order. `slices` maps a leaf that is part of a
 *  parameter (a shard slice) to it; any other leaf is a whole trainable parameter. */
export function piecesOf(opt: AdamW, trainable: Tensor[], slices?: Map<Tensor, { param: Tensor; inParam: number; len: number }>): Piece[] {
  const index = new Map(trainable.map((p, j) => [p, j]));
  return opt.groups.flatMap((g) =>
    g.params.map((leaf): Piece => {
      const s = slices?.get(leaf);
      const j = index.get(s ? s.param : leaf);
      if (j === undefined) throw new Error('[checkpoint] an optimizer parameter is not among the trainable parameters');
      return s ? [j, s.inParam, s.len] : [j, 0, leaf.numel];
    }),
  );
}

interface Source {
  file: SafetensorsFile;
  name: string;
  leaf: number;
  piece: Piece;
}

const STATE = ['exp_avg', 'exp_avg_sq', 'master'] as const;

/**
 * Loads the state saved in `files` (each with its pieces) into `opt`, whose leaves are `pieces`. A file
 * without recorded pieces is loaded as is when it is the only one (the old layout-bound format).
 */
export function loadOptimizerPieces(opt: AdamW, files: string[], pieces: Piece[], step: number): void {
  const opened = files.map((f) => SafetensorsFile.open(f));
  const byParam = new Map<number, Source[]>();
  const out = new Map<string, Tensor>();
  try {
    for (const [k, src] of opened.entries()) {
      const rec = src.metadata[PIECES_KEY];
      if (rec === undefined) {
        if (files.length === 1) return loadOptimizer(opt, files[0], step);
        throw new Error(
          `[checkpoint] ${files[k]} does not record its pieces (written by an older version): resume with the processes and strategy that wrote it`,
        );
      }
      (JSON.parse(rec) as Piece[]).forEach((piece, leaf) =>
        byParam.set(piece[0], [...(byParam.get(piece[0]) ?? []), { file: src, name: files[k], leaf, piece }]),
      );
    }
    const params = opt.groups.flatMap((g) => g.params);
    pieces.forEach(([j, a, len], i) => {
      const want = new Map<string, Float32Array>();
      let covered = 0;
      for (const s of byParam.get(j) ?? []) {
        const [, b, n] = s.piece;
        const lo = Math.max(a, b);
        const hi = Math.min(a + len, b + n);
        if (hi <= lo) continue;
        if (!s.file.has(`${s.leaf}.exp_avg`)) continue; // a leaf that never stepped
        covered += hi - lo;
        for (const what of STATE) {
          const name = `${s.leaf}.${what}`;
          if (!s.file.has(name)) continue;
          const data = s.file.readAsFloat32(name);
          if (data.length !== n) throw new Error(`[checkpoint] ${s.name}: '${name}' has ${data.length} elements, its piece ${n}`);
          if (!want.has(what)) want.set(what, new Float32Array(len));
          want.get(what)!.set(data.subarray(lo - b, hi - b), lo - a);
        }
      }
      if (covered === 0) return; // no state saved for it: starts from zero, as a fresh optimizer
      if (covered !== len)
        throw new Error(`[checkpoint] the saved optimizer state covers ${covered} of the ${len} elements of a piece of parameter ${j}`);
      const p = params[i];
      for (const [what, data] of want)
        out.set(
          `${i}.${what}`,
          noGrad(() => fromTypedArray(data, p.shape, { dtype: 'float32', device: p.device })),
        );
    });
    opt.loadStateTensors(out, step);
  } finally {
    for (const t of out.values()) t.dispose();
    for (const f of opened) f.close();
  }
}
