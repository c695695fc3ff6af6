// model_files.ts — how the model folders a training run saves differ from its base model's files.
import type { LlavaForConditionalGeneration } from '../../models/llava';
import type { DatasetSpec } from './dataset';
import type { ModelFilesPatch } from './train_state';
import { resolveTrainingTemplate } from '../processing/preprocess';
import { jinjaForTemplate } from '../processing/chat_template';
import { trainingConfigKeys } from '../processing/training_record';

/** config.json records the training template, aspect and image token scheme (processing/training_record.ts),
 *  then the caller's configPatch; a llava-hf base's Jinja chat_template becomes the training template's
 *  (removed when it has no Jinja form). */
export function modelFilesPatch(
  model: LlavaForConditionalGeneration,
  spec: DatasetSpec,
  configPatch: ((cfg: Record<string, unknown>) => void) | undefined,
): ModelFilesPatch {
  const template = resolveTrainingTemplate(spec.template).name;
  const keys = trainingConfigKeys({
    template,
    aspect: spec.aspect,
    format: model.config.format,
    numImageTokens: model.numImageTokens,
    imageTokenIndex: model.config.imageTokenIndex,
    maxLength: spec.maxLength,
  });
  return {
    config: (cfg) => {
      Object.assign(cfg, keys);
      configPatch?.(cfg);
    },
    chatTemplate: model.config.format === 'llava-hf' ? jinjaForTemplate(template) : undefined,
  };
}
