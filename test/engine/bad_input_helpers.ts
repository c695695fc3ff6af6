// bad_input_helpers.ts — shared by bad_input.test.ts and bad_input_native.test.ts: the table of bad
// calls, each run inside tidy(), which must throw a JS Error whose message names the op and leave the tensor
// count as it was.
import type { Test } from 'tap';
import { refuses } from '../helpers';

export type Case = [name: string, op: string | RegExp, fn: () => unknown];

/** Runs each case inside tidy and checks the error and the tensor count. */
export function runTable(t: Test, cases: Case[]): void {
  // A kernel's error names the op's kernel (`[cross_entropy_fwd] ...`), which counts as naming the op.
  for (const [name, op, fn] of cases) refuses(t, name, typeof op === 'string' ? new RegExp(`^\\[${op}(_fwd|_bwd)?\\] \\S`) : op, fn);
}
