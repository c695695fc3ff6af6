// cases.ts — the device parity case table, shared by test/gpu/check.ts (one command on the GPU machine)
// and test/cuda/device_parity.test.ts (the tap suite, which skips with the reason when CUDA is missing).
// Every case runs the same computation through the TypeScript API on the device under test ('cuda')
// and on the CPU from the same host data; parity.ts holds the harness and the tolerance rules,
// cases_core.ts / cases_nn.ts / cases_conv.ts / cases_quant.ts / cases_model.ts the cases.
import { ParityCase } from './parity';
import { coreCases } from './cases_core';
import { nnCases } from './cases_nn';
import { modelCases } from './cases_model';
import { convCases } from './cases_conv';
import { quantCases } from './cases_quant';

export function parityCases(): ParityCase[] {
  return [...coreCases(), ...nnCases(), ...convCases(), ...quantCases(), ...modelCases()];
}

/** Group names in table order. */
export function parityGroups(cases: ParityCase[] = parityCases()): string[] {
  return [...new Set(cases.map((c) => c.group))];
}

export * from './parity';
