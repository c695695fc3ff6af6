// tiny_dataset.ts — the dataset settings the training tests use with the tiny fixture model
// (test/fixtures/tiny-llava: llava-hf layout, 16 image tokens, image token id 676) and the bundled demo
// data's images. Kept out of helpers.ts so that engine tests do not load the training code.
import * as path from 'path';
import { resolveProcessorConfig, type DatasetSpec } from '../lib/app/train/dataset';
import { TEST_DIR } from './helpers';

export const TINY_LLAVA = path.join(TEST_DIR, 'fixtures', 'tiny-llava');

/** Dataset settings for the tiny fixture model over `imageFolder`; `over` replaces any field. */
export function tinyDatasetSpec(imageFolder: string, over: Partial<DatasetSpec> = {}): DatasetSpec {
  return {
    imageFolder,
    tokenizerDir: TINY_LLAVA,
    processor: resolveProcessorConfig(TINY_LLAVA),
    template: 'v1',
    aspect: 'square',
    modelMaxLength: 512,
    format: 'llava-hf',
    numImageTokens: 16,
    imageTokenIndex: 676,
    maxLength: 512,
    ...over,
  };
}
