// fixture64.ts — the tiny LLaVA fixture in float64 (where summation order cannot flip a token), its
// tokenizer and its two images as [1, 3, 28, 28] float64 tensors: loaded before a test file's tests, freed
// after them (batcher.test.ts, prefix_cache.test.ts).
import t from 'tap';
import * as path from 'path';
import * as L from '../../../lib';
import { loadLlava } from '../../../lib/models/loader';
import type { LlavaForConditionalGeneration } from '../../../lib/models/llava';
import { SafetensorsFile } from '../../../lib/io/safetensors';
import { Tokenizer } from '../../../lib/app/processing/tokenizer';
import { TEST_DIR } from '../../helpers';

export interface Float64Llava {
  model: LlavaForConditionalGeneration;
  tok: Tokenizer;
  /** image0 and image1's pixel values. */
  pix: L.Tensor[];
}

/** The fixture for the calling test file (its fields are set once the file's tests start). */
export function useFloat64Llava(): Float64Llava {
  const f = {} as Float64Llava;
  t.before(() => {
    const dir = path.join(TEST_DIR, 'fixtures', 'tiny-llava');
    f.model = loadLlava(dir, { dtype: 'float64' });
    f.tok = Tokenizer.fromDir(dir);
    const ref = SafetensorsFile.open(path.join(dir, 'reference.safetensors'));
    f.pix = ['image0', 'image1'].map((n) => L.keep(L.tensor(ref.readAsFloat32(`${n}.pixel_values`), { shape: [1, 3, 28, 28], dtype: 'float64' })));
    ref.close();
  });
  t.teardown(() => {
    f.model.dispose();
    f.pix.forEach((p) => p.dispose());
  });
  return f;
}
