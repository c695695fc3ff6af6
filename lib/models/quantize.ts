// quantize.ts — which layers of a LLaVA get int8 / NF4 storage (the reference's --load-8bit / --load-4bit
// and train.py --bits): the linear layers of the language model except lm_head; the vision tower and the
// projector stay as loaded (train.py skips mm_projector; the tower is loaded unquantized).
import { Linear } from '../nn/layers';
import { linearLayers, quantizeLinear } from '../nn/lora';
import type { QuantFormat } from '../ops/quant';
import type { LlavaForConditionalGeneration } from './llava';

/** The language model's Linear layers but lm_head, with their engine paths. */
export function languageLinears(model: LlavaForConditionalGeneration): [string, Linear][] {
  return linearLayers(model.lm, 'language_model.').filter(([p]) => p !== 'language_model.lm_head');
}

/** Quantize those layers in place; returns bytes before and after. */
export function quantizeLanguageModel(
  model: LlavaForConditionalGeneration,
  format: QuantFormat,
  layers = languageLinears(model),
): { before: number; after: number } {
  let before = 0;
  let after = 0;
  for (const [, l] of layers) {
    if (l.quantized) continue;
    before += l.weight.numel * (l.weight.dtype === 'float32' ? 4 : l.weight.dtype === 'float64' ? 8 : 2);
    quantizeLinear(l, format);
    after += l.quantized!.nbytes;
  }
  return { before, after };
}
