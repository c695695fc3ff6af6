// index.ts — the public API: tensors, ops, autograd and memory management.
export { Tensor } from './core/tensor';
export type { Shape, NestedArray, TensorOrScalar } from './core/tensor';
export type { DType, Device } from './core/dtype';
export { noGrad, enableGrad, isGradEnabled, onGradReady } from './core/autograd';
export { tidy, keep, memory, emptyCache } from './core/memory';
export type { MemoryInfo, DeviceMemory } from './core/memory';
export { profile, profileAsync, formatProfile, byKernel } from './core/profile';
export type { Profile, KernelTime } from './core/profile';
export * from './ops';
export * as cuda from './cuda';

// Layers, optimisers and the LLaVA stack.
export * as nn from './nn';
export * as optim from './optim';
export * as dist from './dist';
export { checkpoint } from './core/recompute';
export { loadLlava, loadClipVision, loadLlama, fromPretrained } from './models/loader';
export type { LoadOptions } from './models/loader';
export { openStateDict, checkpointFormat } from './io/state_dict';
export type { StateDict, CheckpointFormat } from './io/state_dict';
export { PytorchFile } from './io/pytorch';
export { convertToSafetensors } from './io/convert';
export { LlavaForConditionalGeneration } from './models/llava';
export type { LlavaConfig, LlavaBatch } from './models/llava';
export { Tokenizer } from './app/processing/tokenizer';
export { CLIPImageProcessor, decodeImage, decodeImageAsync, ImageLimitError, imageLimits } from './app/processing/image';
export type { ImageLimits, RgbImage } from './app/processing/image';
export { LlavaSession, resolveVision } from './app/processing/session';
export type { SessionOptions } from './app/processing/session';
export { generate, generateText } from './app/inference/generate';
export { generateBatch } from './app/inference/generate_batch';
export type { BatchPrompt, GenerateBatchOptions } from './app/inference/generate_batch';
export { DecodeBatcher } from './app/inference/batcher';
export type { BatchRequest, BatchResult, BatcherOptions } from './app/inference/batcher';

// Around the model: evaluation (ScienceQA, LLaVA-Bench), the GPT-assisted data pipeline, the HTTP server.
export * as evaluation from './app/eval/index';
export { OpenAIJudge, runBenchReview } from './app/eval/judge';
export { generateAnswers, loadEvalModel } from './app/eval/answer';
export * as gptData from './app/datagen/index';
export { createServer as createLlavaServer, startServer as startLlavaServer } from './app/serve/server';
