// training_record.ts — what a trained model folder says about how it was trained, in its config.json, so
// that every entry point (chat, serve, eval, verify: processing/session.ts) prompts and preprocesses it the
// way it saw its data, without flags and before any guess from the format or the directory name.
//
// Keys written into config.json by the trainer (trainingConfigKeys):
//   conversation_template   the conversation template the training data was rendered with (conversation.ts
//                           names; a training `--version` such as v0 is stored as the template it stands
//                           for, docs/reference.md §4.1). Our own key: the reference keeps the version only in
//                           its training arguments.
//   image_aspect_ratio      'pad' or 'square', the reference's own config key (docs/reference.md §2.2); also
//                           written for llava-hf folders, whose processor config has no such setting.
//   mm_use_im_start_end, mm_use_im_patch_token
//                           original-layout folders: the reference's keys for the image token scheme (our
//                           trainer uses neither: false).
//   image_token_index, image_seq_length
//                           llava-hf folders: the image token id and how many copies of it stand for one image.
//   tokenizer_model_max_length
//                           original-layout folders: the training max length (the reference writes it too).
//
// readTrainingRecord reads back what the entry points need; an unknown conversation_template is an error
// that names the file (a typo there must not silently fall back to a guess).
import * as fs from 'fs';
import * as path from 'path';
import { TEMPLATE_NAMES } from './conversation';
import type { AspectMode } from './image';
import { readJson } from '../../io/json';

/** The config.json key that names the conversation template a model was trained with. */
export const TEMPLATE_KEY = 'conversation_template';
/** The reference's config.json key for the image aspect mode. */
export const ASPECT_KEY = 'image_aspect_ratio';

export interface TrainingFacts {
  /** Inference template name (resolveTrainingTemplate(version).name). */
  template: string;
  aspect: AspectMode;
  format: 'llava-hf' | 'llava_llama';
  numImageTokens: number;
  imageTokenIndex: number;
  maxLength: number;
}

/** The keys a trained model's config.json gets (see the header). */
export function trainingConfigKeys(f: TrainingFacts): Record<string, unknown> {
  const keys: Record<string, unknown> = { [TEMPLATE_KEY]: f.template, [ASPECT_KEY]: f.aspect };
  if (f.format === 'llava_llama')
    Object.assign(keys, { mm_use_im_start_end: false, mm_use_im_patch_token: false, tokenizer_model_max_length: f.maxLength });
  else Object.assign(keys, { image_token_index: f.imageTokenIndex, image_seq_length: f.numImageTokens });
  return keys;
}

export interface TrainingRecord {
  /** conversation_template, when the folder names one. */
  template?: string;
  /** image_aspect_ratio, when it is 'pad' or 'square'. */
  aspect?: AspectMode;
  /** mm_use_im_start_end (original layout). */
  mmUseImStartEnd: boolean;
  /** The config file read. */
  file: string;
}

/** What `dir/config.json` records about training (all optional; nothing when there is no config.json);
 *  throws naming the file when it cannot be parsed or names an unknown template. */
export function readTrainingRecord(dir: string): TrainingRecord {
  const file = path.join(dir, 'config.json');
  if (!fs.existsSync(file)) return { mmUseImStartEnd: false, file };
  const cfg = readJson<Record<string, unknown>>(file, 'file', 'session', { object: true });
  const rec: TrainingRecord = { mmUseImStartEnd: cfg.mm_use_im_start_end === true, file };
  const t = cfg[TEMPLATE_KEY];
  if (t !== undefined && t !== null) {
    if (typeof t !== 'string' || !TEMPLATE_NAMES.includes(t))
      throw new Error(`[session] ${file}: ${TEMPLATE_KEY} ${JSON.stringify(t)} is not a known template (${TEMPLATE_NAMES.join(', ')})`);
    rec.template = t;
  }
  const a = cfg[ASPECT_KEY];
  if (a === 'pad' || a === 'square') rec.aspect = a;
  return rec;
}
