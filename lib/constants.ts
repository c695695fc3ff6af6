// constants.ts — the numbers and strings that LLaVA's model, data and training code agree on, in one
// place (the role of the reference's llava/constants.py; docs/reference.md §1.5–§1.8).
// Imported by lib/models and every room of lib/app; imports nothing.

/** Label value the loss skips (PyTorch's cross-entropy ignore_index). */
export const IGNORE_INDEX = -100;
/** The id that stands for "the image goes here" in the original scheme's input ids (one per image;
 *  replaced by the image's feature rows when embedding). llava-hf checkpoints use a real vocabulary id
 *  instead (config `image_token_index`), repeated once per feature row. */
export const IMAGE_TOKEN_INDEX = -200;

/** The text marker of the image in prompts and data records. */
export const DEFAULT_IMAGE_TOKEN = '<image>';
/** Tokens of the `mm_use_im_start_end` / `mm_use_im_patch_token` variants (docs/reference.md §1.7). */
export const DEFAULT_IMAGE_PATCH_TOKEN = '<im_patch>';
export const DEFAULT_IM_START_TOKEN = '<im_start>';
export const DEFAULT_IM_END_TOKEN = '<im_end>';
/** Placeholder the reference's CLI uses for where to put the image in a user query. */
export const IMAGE_PLACEHOLDER = '<image-placeholder>';

/** Generation defaults of the reference's chat and server (docs/reference.md §9). */
export const DEFAULT_TEMPERATURE = 0.2;
export const DEFAULT_MAX_NEW_TOKENS = 512;
