export { Module, ModuleList } from './module';
export { Linear, LayerNorm, RMSNorm, Embedding } from './layers';
export type { LayerOptions } from './layers';
export * from './lora';
