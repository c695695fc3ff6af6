// kernels.test.ts — the kernel names TypeScript uses (lib/core/kernels.ts) against what the addon
// registers: the typed list must equal the CPU registry exactly, and the CUDA registry too when the
// build has CUDA (CUDA kernels register from static constructors when the addon loads, GPU or not).
// Also: a misspelt kernel name is a TypeScript compile error, and an unknown name reaching the addon
// anyway (through a cast) is refused by name.
import t from 'tap';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as ts from 'typescript';
import { KERNELS, KernelName, registeredKernels } from '../../lib/core/kernels';
import { kernel } from '../../lib/core/dispatch';
import { native } from '../../lib/native';
import * as L from '../../lib';

const ROOT = path.resolve(__dirname, '..', '..');
const sorted = (xs: readonly string[]): string[] => [...xs].sort();

t.test('the TypeScript list has no repeats', async (t) => {
  t.equal(new Set(KERNELS).size, KERNELS.length, `${KERNELS.length} distinct names`);
  t.ok(KERNELS.length > 0);
});

t.test('every CPU kernel is in the list and every listed kernel is registered on the CPU', async (t) => {
  const cpu = registeredKernels('cpu');
  t.same(cpu, sorted(KERNELS), 'TS list == CPU registry');
  const extra = cpu.filter((k) => !(KERNELS as readonly string[]).includes(k));
  const missing = KERNELS.filter((k) => !cpu.includes(k));
  t.same(extra, [], 'registered on the CPU but not listed in lib/core/kernels.ts');
  t.same(missing, [], 'listed but not registered on the CPU');
});

t.test('the CUDA registry matches the list (when the build has CUDA)', async (t) => {
  const info = native.deviceInfo(1);
  if (!info.compiled) {
    t.skip('this addon was built without CUDA (LLAVA_NO_CUDA or no nvcc): no CUDA kernels are registered', () => {});
    return;
  }
  // Registration happens when the addon loads, whether or not a GPU is present, so this runs on
  // machines without one too.
  t.same(registeredKernels('cuda'), sorted(KERNELS), `TS list == CUDA registry (GPU ${info.available ? 'present' : 'absent'})`);
});

t.test('an unknown name that slips past the types is refused by the addon, naming it', async (t) => {
  const x = L.zeros([2]);
  t.throws(() => kernel('no_such_kernel' as KernelName, [x]), /^\[no_such_kernel\] no kernel for device cpu/);
  x.dispose();
});

t.test('a misspelt kernel name does not compile', async (t) => {
  // Type-check a two-line file against the real lib/core/dispatch.ts: the correct name must compile,
  // the misspelt one must be rejected as not assignable to KernelName.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kernel-names-'));
  const dispatch = path.join(ROOT, 'lib', 'core', 'dispatch').replace(/\\/g, '/');
  const file = path.join(dir, 'probe.ts');
  fs.writeFileSync(
    file,
    [
      `import { kernel } from '${dispatch}';`,
      `export const ok = (): void => kernel('matmul', []);`,
      `export const typo = (): void => kernel('matmull', []);`,
      '',
    ].join('\n'),
  );
  try {
    const program = ts.createProgram([file], {
      strict: true,
      noEmit: true,
      skipLibCheck: true,
      target: ts.ScriptTarget.ES2022,
      module: ts.ModuleKind.CommonJS,
      moduleResolution: ts.ModuleResolutionKind.Node10,
      lib: ['lib.es2022.d.ts', 'lib.esnext.disposable.d.ts'],
      types: ['node'],
      typeRoots: [path.join(ROOT, 'node_modules', '@types')],
      esModuleInterop: true,
      resolveJsonModule: true,
      ignoreDeprecations: '6.0',
    });
    const probe = program.getSourceFile(file)!;
    const diags = ts.getPreEmitDiagnostics(program, probe).map((d) => ({
      line: d.start !== undefined ? probe.getLineAndCharacterOfPosition(d.start).line + 1 : 0,
      text: ts.flattenDiagnosticMessageText(d.messageText, '\n'),
    }));
    t.same(
      diags.filter((d) => d.line === 2),
      [],
      "kernel('matmul', ...) compiles",
    );
    const typo = diags.filter((d) => d.line === 3);
    t.equal(typo.length, 1, "kernel('matmull', ...) is a compile error");
    // TypeScript spells KernelName out as the union of the listed names (its first ~14, then "... N more ...").
    t.match(
      typo[0]?.text ?? '',
      /type '"matmull"' is not assignable to parameter of type '"copy" \| "fill" \|.*\| "quant_matmul"'/s,
      'the error says the name is not one of the kernel names',
    );
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
