// bad_input_helpers.ts — shared by bad_input.test.ts and bad_input_native.test.ts: the table of bad
// calls, each run inside tidy(), which must throw a JS Error whose message names the op and leave the tensor
// count as it was.
import type { Test } from 'tap';
import * as L from '../../lib';

export type Case = [name: string, op: string | RegExp, fn: () => unknown];

/** Runs each case inside tidy and checks the error and the tensor count. */
export function runTable(t: Test, cases: Case[]): void {
  for (const [name, op, fn] of cases) {
    const before = L.memory().numTensors;
    let err: unknown = null;
    try {
      L.tidy(() => {
        fn();
      });
    } catch (e) {
      err = e;
    }
    // A kernel's error names the op's kernel (`[cross_entropy_fwd] ...`), which counts as naming the op.
    const re = typeof op === 'string' ? new RegExp(`^\\[${op}(_fwd|_bwd)?\\] \\S`) : op;
    if (!(err instanceof Error)) t.fail(`${name}: expected an Error, got ${err === null ? 'no throw' : String(err)}`);
    else t.match(err.message, re, `${name}: ${err.message}`);
    t.equal(L.memory().numTensors, before, `${name}: no tensor leaked`);
  }
}
