export { AdamW, clipGradNorm, cosineWithWarmup } from './adamw';
export type { AdamWOptions, ParamGroup } from './adamw';
