// dataset.ts — LLaVA training data for the trainer: lazy per-item encoding (image decode + CLIP
// preprocessing + template tokenisation and label masking) and the collator.
//
// Shapes: an item is 1-D ids/labels and one [3, S, S] image (or none for text-only samples); a collated
// micro-batch is B rows right-padded to the longest, with attention masks and labels -100 on pads, plus
// N images [N, 3, S, S] as one Float32Array.
//
// Decisions:
// - Item encoding (`SampleEncoder`) is pure JS (no tensors, no native addon), so it runs unchanged in
//   worker threads. The spec (`DatasetSpec`) is plain data and is what a worker receives.
// - Image placeholders: for llava-hf checkpoints each -200 becomes numImageTokens copies of
//   imageTokenIndex (`expandImageTokens`), cut to the model's max length after expansion; a cut through
//   an image block cannot be fed to the model and makes the sample malformed. For original `llava_llama`
//   checkpoints the -200 sentinels stay and the model splices (and truncates) itself.
// - Text-only samples get a zero image of the crop size (docs/reference.md §1.6 step 5, `LazySupervisedDataset`). The
//   collator orders a batch's images so the model's in-order consumption by placeholders matches the
//   reference: real images first (in sample order), the zero images after them, where they are encoded
//   and dropped. llava-hf batches that contain image tokens cannot carry extra images (the model checks
//   counts), so zero images are kept there only when the whole batch is text-only.
// - Padding: ids are right-padded with the tokenizer's pad id (else UNK, else 0); the attention mask comes
//   from the real lengths, not from `ids != pad` (the reference's pad = UNK would mask real UNK tokens).
// - Malformed records: JSON-level problems are found by processing/data.ts (`loadDataset`); missing image files are
//   found up front (`checkImages`); decode failures, truncation through an image and samples with no
//   supervised token (their token-mean loss would be NaN) are found when the item is encoded. Each is
//   reported with the record index and id; onError 'fatal' throws a DataError, 'skip' drops the sample and
//   reports it.
// - Prefetching lives in batch_loader.ts.
import * as fs from 'fs';
import { checkOptions, optionKeys } from '../../options';
import { Tokenizer } from '../processing/tokenizer';
import { CLIPImageProcessor, ClipProcessorConfig, AspectMode } from '../processing/image';
import { preprocessSample, expandImageTokens, resolveTrainingTemplate, addSpeakerAndSignal } from '../processing/preprocess';
import { appendMessage, copy, preprocessMultimodal, render } from '../processing/conversation';
import { loadDataset, checkImages, imagePath, DataError, Sample, RecordIssue, ValidationReport } from '../processing/data';
import { IGNORE_INDEX, IMAGE_TOKEN_INDEX } from '../../constants';
import { DEFAULT_IMAGE_TOKEN } from '../../constants';

export { DataError, IGNORE_INDEX, IMAGE_TOKEN_INDEX };
// Lives in processing/image.ts (inference, serving and evaluation need it too); re-exported for old callers.
export { resolveProcessorConfig } from '../processing/image';

/** Everything needed to encode items: plain data, so it can be sent to a worker thread. */
export interface DatasetSpec {
  imageFolder: string;
  /** Directory holding tokenizer.json (+ tokenizer_config.json). */
  tokenizerDir: string;
  /** CLIPImageProcessor config (preprocessor_config.json contents). */
  processor: ClipProcessorConfig;
  /** Training `--version`: plain, v1, vicuna_v1, llava_v0, llava_llama_2, ... */
  template: string;
  aspect: AspectMode;
  /** Token-level cut (tokenizer model_max_length; reference 2048). */
  modelMaxLength: number;
  format: 'llava-hf' | 'llava_llama';
  /** Feature rows per image (llava-hf expansion). */
  numImageTokens: number;
  /** llava-hf image token id. */
  imageTokenIndex: number;
  /** Post-expansion cut for llava-hf sequences (the model's max length). */
  maxLength: number;
}

/** The DatasetSpec fields a model decides: its sequence format, image tokens and lengths. */
export function modelSpecFields(model: {
  numImageTokens: number;
  config: { format: DatasetSpec['format']; imageTokenIndex: number; maxLength: number };
}): Pick<DatasetSpec, 'format' | 'numImageTokens' | 'imageTokenIndex' | 'modelMaxLength' | 'maxLength'> {
  const { format, imageTokenIndex, maxLength } = model.config;
  return { format, numImageTokens: model.numImageTokens, imageTokenIndex, modelMaxLength: maxLength, maxLength };
}

export interface EncodedItem {
  /** Position of the sample in the dataset's sample list. */
  pos: number;
  /** Record index in the source JSON array. */
  index: number;
  id: string;
  inputIds: number[];
  labels: number[];
  /** CHW float32 [3, S, S]; null for text-only samples (a zero image is attached by the collator). */
  pixels: Float32Array | null;
}

export interface CollatedBatch {
  inputIds: number[][];
  attentionMask: number[][];
  labels: number[][];
  /** [numImages, 3, S, S] flattened, or null when numImages is 0. */
  pixels: Float32Array | null;
  numImages: number;
  imageSize: number;
  /** Supervised targets of the causal-LM loss (labels != -100 after the first position). */
  supervisedTokens: number;
  /** Real (non-pad) input positions, image rows included once spliced. */
  inputTokens: number;
  ids: string[];
  indices: number[];
}

export interface DatasetOptions {
  onError?: 'skip' | 'fatal';
  /** Check image files exist at load time (default true). */
  checkImages?: boolean;
  /** Where reports go (default console.warn). */
  logger?: (msg: string) => void;
}
const FROM_FILE_KEYS = optionKeys<DatasetOptions & { tokenizer?: Tokenizer }>({ onError: true, checkImages: true, logger: true, tokenizer: true });

// ---------------------------------------------------------------------------------------------------------
// Spec helpers

/** The prompt string a training template renders for a sample (what the tokenizer sees), `<image>` kept. */
export function renderTrainingPrompt(sample: Sample, template: string): string {
  const { conv, path: p } = resolveTrainingTemplate(template);
  let turns = sample.conversations.map((t) => ({ ...t }));
  if (sample.image !== undefined) turns = preprocessMultimodal(turns, { mmtag: conv.version.includes('mmtag') });
  if (p === 'plain') return DEFAULT_IMAGE_TOKEN + (turns[1]?.value ?? '') + conv.sep;
  if (p === 'sep') return addSpeakerAndSignal(`${conv.system}\n\n`, turns, conv.roles).conversation;
  const c = copy(conv);
  c.messages = [];
  const roles = { human: c.roles[0], gpt: c.roles[1] };
  const src = turns.length && turns[0].from === 'gpt' ? turns.slice(1) : turns;
  for (const t of src) appendMessage(c, roles[t.from], t.value);
  return render(c);
}

// ---------------------------------------------------------------------------------------------------------
// Item encoding

/** Encodes one sample into ids, labels and pixels. Pure JS: also used inside worker threads. */
export class SampleEncoder {
  readonly tokenizer: Tokenizer;
  readonly processor: CLIPImageProcessor;
  readonly imageSize: number;
  /** Warnings from the preprocessor (tokenization mismatch) go here. */
  onWarning: (msg: string) => void = (m) => console.warn(m);

  constructor(
    readonly spec: DatasetSpec,
    tokenizer?: Tokenizer,
  ) {
    this.tokenizer = tokenizer ?? Tokenizer.fromDir(spec.tokenizerDir);
    this.processor = new CLIPImageProcessor(spec.processor, 'preprocessor config');
    if (this.processor.cropHeight !== this.processor.cropWidth) throw new Error('[dataset] non-square crop sizes are not supported');
    this.imageSize = this.processor.cropHeight;
    resolveTrainingTemplate(spec.template); // validates the template name early
  }

  get padId(): number {
    return this.tokenizer.padId ?? this.tokenizer.unkId ?? 0;
  }

  /** Tokenise + mask (no image decoding): ids with -200 sentinels, as the reference preprocess gives them. */
  tokenize(sample: Sample): { inputIds: number[]; labels: number[]; mismatch?: boolean } {
    let warned: string | null = null;
    const r = preprocessSample(sample, {
      template: this.spec.template,
      tokenizer: this.tokenizer,
      modelMaxLength: this.spec.modelMaxLength,
      onWarning: (m) => {
        warned = m;
        this.onWarning(m);
      },
    });
    if (warned) r.mismatch = true;
    return r;
  }

  /** Throws DataError (with index and id) for a sample that cannot be trained on. */
  encode(sample: Sample, pos: number, index: number): EncodedItem {
    const fail = (message: string): never => {
      throw new DataError(`[dataset] record ${index} (id ${sample.id}): ${message}`, [{ index, id: sample.id, message }]);
    };
    let tok: { inputIds: number[]; labels: number[]; mismatch?: boolean };
    try {
      tok = this.tokenize(sample);
    } catch (e) {
      if (e instanceof DataError) throw e;
      return fail((e as Error).message);
    }
    let { inputIds, labels } = tok;
    if (this.spec.format === 'llava-hf') {
      const full = expandImageTokens(inputIds, labels, this.spec.numImageTokens, this.spec.imageTokenIndex);
      if (full.inputIds.length > this.spec.maxLength) {
        // The cut must not split an image block: the model needs all feature rows of an image.
        const firstImg = full.inputIds.indexOf(this.spec.imageTokenIndex);
        if (firstImg >= 0 && firstImg < this.spec.maxLength && firstImg + this.spec.numImageTokens > this.spec.maxLength)
          fail(`sequence of ${full.inputIds.length} tokens cut at ${this.spec.maxLength} would split its image`);
        if (firstImg >= this.spec.maxLength && inputIds.includes(IMAGE_TOKEN_INDEX))
          fail(`image placeholder lies beyond max length ${this.spec.maxLength}`);
      }
      inputIds = full.inputIds.slice(0, this.spec.maxLength);
      labels = full.labels.slice(0, this.spec.maxLength);
    }
    let supervised = 0;
    for (let t = 1; t < labels.length; t++) if (labels[t] !== IGNORE_INDEX) supervised++;
    if (supervised === 0) fail(tok.mismatch ? 'tokenization mismatch masked every label' : 'no supervised tokens left (truncated?)');
    let pixels: Float32Array | null = null;
    if (sample.image !== undefined) {
      try {
        pixels = this.processor.preprocess(imagePath(this.spec.imageFolder, sample.image), { aspect: this.spec.aspect }).pixelValues;
      } catch (e) {
        fail((e as Error).message);
      }
    }
    return { pos, index, id: sample.id, inputIds, labels, pixels };
  }
}

// ---------------------------------------------------------------------------------------------------------
// Dataset

/** A LazySupervisedDataset: records parsed and validated up front, items encoded on demand. */
export class LlavaDataset {
  readonly encoder: SampleEncoder;
  /** Records dropped up front (invalid JSON records, missing images), each with index and id. */
  readonly skipped: RecordIssue[] = [];
  readonly onError: 'skip' | 'fatal';
  readonly logger: (msg: string) => void;

  constructor(
    readonly spec: DatasetSpec,
    readonly samples: Sample[],
    /** indices[k] = record index of samples[k] in the source array. */
    readonly indices: number[],
    opts: DatasetOptions & { tokenizer?: Tokenizer; source?: string; report?: ValidationReport } = {},
  ) {
    this.onError = opts.onError ?? 'fatal';
    this.logger = opts.logger ?? ((m) => console.warn(m));
    this.encoder = new SampleEncoder(spec, opts.tokenizer);
    this.encoder.onWarning = this.logger;
    if (opts.report) this.skipped.push(...opts.report.errors);
    if (opts.checkImages !== false) {
      const missing = checkImages(this.samples, spec.imageFolder, this.indices);
      if (missing.length) {
        const first = missing[0];
        const where = `${opts.source ?? 'dataset'}: ${missing.length} sample(s) with missing images (first: record ${first.index}, id ${first.id}: ${first.message})`;
        if (this.onError === 'fatal') throw new DataError(`[dataset] ${where}`, missing);
        this.logger(`[dataset] ${where}; skipped`);
        const bad = new Set(missing.map((m) => m.index));
        const keep = this.indices.map((ix, k) => (bad.has(ix) ? -1 : k)).filter((k) => k >= 0);
        this.samples = keep.map((k) => this.samples[k]);
        this.indices = keep.map((k) => this.indices[k]);
        this.skipped.push(...missing);
      }
    }
    if (this.samples.length === 0) throw new DataError(`[dataset] ${opts.source ?? 'dataset'}: no usable samples`);
  }

  /** Parse, validate and check a LLaVA JSON file (malformed records: fatal or skipped, by onError). */
  static fromFile(file: string, spec: DatasetSpec, opts: DatasetOptions & { tokenizer?: Tokenizer } = {}): LlavaDataset {
    checkOptions('dataset', opts, FROM_FILE_KEYS);
    if (!fs.existsSync(file)) throw new DataError(`[dataset] data file ${file} not found`);
    if (!fs.existsSync(spec.imageFolder) || !fs.statSync(spec.imageFolder).isDirectory())
      throw new DataError(`[dataset] image folder ${spec.imageFolder} not found`);
    const parsed = loadDataset(file, { onError: opts.onError ?? 'fatal', logger: opts.logger });
    return new LlavaDataset(spec, parsed.samples, parsed.indices, { ...opts, source: file, report: parsed.report });
  }

  get length(): number {
    return this.samples.length;
  }
  get imageSize(): number {
    return this.encoder.imageSize;
  }
  get padId(): number {
    return this.encoder.padId;
  }

  /** Encode sample `pos` (throws DataError for a malformed one). */
  item(pos: number): EncodedItem {
    if (!(Number.isInteger(pos) && pos >= 0 && pos < this.samples.length))
      throw new RangeError(`[dataset] item ${pos} out of range [0, ${this.samples.length})`);
    return this.encoder.encode(this.samples[pos], pos, this.indices[pos]);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Collation

/** Pads a micro-batch (right side) and lays out its images for the model's in-order consumption. */
export function collate(
  items: EncodedItem[],
  opts: { padId: number; format: 'llava-hf' | 'llava_llama'; imageSize: number; numImageTokens?: number },
): CollatedBatch {
  if (items.length === 0) throw new Error('[collate] empty batch');
  const T = Math.max(...items.map((it) => it.inputIds.length));
  const S = opts.imageSize;
  const per = 3 * S * S;
  const inputIds: number[][] = [];
  const attentionMask: number[][] = [];
  const labels: number[][] = [];
  let supervisedTokens = 0;
  let inputTokens = 0;
  for (const it of items) {
    const n = it.inputIds.length;
    const pad = T - n;
    inputIds.push([...it.inputIds, ...new Array<number>(pad).fill(opts.padId)]);
    attentionMask.push([...new Array<number>(n).fill(1), ...new Array<number>(pad).fill(0)]);
    labels.push([...it.labels, ...new Array<number>(pad).fill(IGNORE_INDEX)]);
    for (let t = 1; t < n; t++) if (it.labels[t] !== IGNORE_INDEX) supervisedTokens++;
    inputTokens += n;
  }
  const real = items.filter((it) => it.pixels !== null);
  const textOnly = items.length - real.length;
  // Original scheme: each -200 is one image; zero images (text-only samples) go after the real ones.
  // llava-hf with image tokens present: only the real images (the model checks token/image counts).
  const zeroImages = opts.format === 'llava_llama' || real.length === 0 ? textOnly : 0;
  const numImages = real.length + zeroImages;
  let pixels: Float32Array | null = null;
  if (numImages > 0) {
    pixels = new Float32Array(numImages * per); // zero-filled: the zero images need no writes
    real.forEach((it, k) => {
      if (it.pixels!.length !== per) throw new Error(`[collate] sample ${it.id}: image has ${it.pixels!.length} values, expected ${per}`);
      pixels!.set(it.pixels!, k * per);
    });
  }
  if (opts.format === 'llava_llama' && opts.numImageTokens) {
    // Each -200 becomes numImageTokens rows once the model splices (before its max-length cut).
    const sentinels = items.reduce((a, it) => a + it.inputIds.filter((x) => x === IMAGE_TOKEN_INDEX).length, 0);
    inputTokens += sentinels * (opts.numImageTokens - 1);
  }
  return {
    inputIds,
    attentionMask,
    labels,
    pixels,
    numImages,
    imageSize: S,
    supervisedTokens,
    inputTokens,
    ids: items.map((it) => it.id),
    indices: items.map((it) => it.index),
  };
}
