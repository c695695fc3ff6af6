// presets.ts — the reference's hyperparameters per release and stage (docs/reference.md §5), as the
// values a `llava train --preset NAME` run starts from. Each field is the name of an option in
// options.ts's table; an explicit flag still wins over the preset (options.ts, presetLayer).
//
// paper (v0): stage 1 2e-3 / 128 / 1 epoch, stage 2 2e-5 / 32 / 3 epochs, the `###` template (llava_v0).
// v1 scripts: 2e-3 / 128 / 1 (plain), 2e-5 / 128 / 1 (v1).
// v1.5 scripts: 1e-3 / 256 / 1 (plain), 2e-5 / 128 / 1 (v1, pad aspect, modality-length grouping).
// v1.5-lora (finetune_lora.sh): 2e-4 / 128 / 1, LoRA r 128, alpha 256, dropout 0.05, projector lr 2e-5.

export type StageName = 'pretrain' | 'finetune';
export type PresetName = 'paper' | 'v1' | 'v1.5' | 'v1.5-lora';

export interface StagePreset {
  lr: number;
  globalBatch: number;
  epochs: number;
  /** Training `--version`. */
  template: string;
  aspect: 'square' | 'pad';
  groupByModalityLength: boolean;
  /** LoRA presets only (scripts/v1_5/finetune_lora.sh). */
  loraR?: number;
  loraAlpha?: number;
  loraDropout?: number;
  mmProjectorLr?: number;
}

export const PRESETS: Record<PresetName, Record<StageName, StagePreset>> = {
  paper: {
    pretrain: { lr: 2e-3, globalBatch: 128, epochs: 1, template: 'llava_v0', aspect: 'square', groupByModalityLength: false },
    finetune: { lr: 2e-5, globalBatch: 32, epochs: 3, template: 'llava_v0', aspect: 'square', groupByModalityLength: false },
  },
  v1: {
    pretrain: { lr: 2e-3, globalBatch: 128, epochs: 1, template: 'plain', aspect: 'square', groupByModalityLength: false },
    finetune: { lr: 2e-5, globalBatch: 128, epochs: 1, template: 'v1', aspect: 'square', groupByModalityLength: false },
  },
  'v1.5': {
    pretrain: { lr: 1e-3, globalBatch: 256, epochs: 1, template: 'plain', aspect: 'square', groupByModalityLength: false },
    finetune: { lr: 2e-5, globalBatch: 128, epochs: 1, template: 'v1', aspect: 'pad', groupByModalityLength: true },
  },
  'v1.5-lora': {
    pretrain: { lr: 1e-3, globalBatch: 256, epochs: 1, template: 'plain', aspect: 'square', groupByModalityLength: false },
    finetune: {
      lr: 2e-4,
      globalBatch: 128,
      epochs: 1,
      template: 'v1',
      aspect: 'pad',
      groupByModalityLength: true,
      loraR: 128,
      loraAlpha: 256,
      loraDropout: 0.05,
      mmProjectorLr: 2e-5,
    },
  },
};

export const PRESET_NAMES = Object.keys(PRESETS) as PresetName[];

/** Option names a preset sets (the same for every preset and stage). */
export const PRESET_KEYS = Object.keys(PRESETS['v1.5-lora'].finetune) as (keyof StagePreset)[];
