// kernels.ts — the names of the native kernels, as one typed list.
//
// A kernel is looked up in the addon by (name, device); the name crosses from TypeScript to C++ as a
// plain string. Listing every name here and typing `kernel(name, ...)` with KernelName turns a typo
// into a compile error, and test/engine/kernels.test.ts checks that this list is exactly what the
// addon registers (on the CPU always, on CUDA when the build has it). Argument lists: cpp/KERNELS.md.
import { native } from '../native';
import { Device, DEVICE_CODE } from './dtype';

export const KERNELS = [
  // elementwise (cpu_elementwise.cc / elementwise.cu)
  'copy',
  'fill',
  'arange',
  'unary',
  'unary_bwd',
  'swiglu',
  'swiglu_bwd',
  'binary',
  'where',
  'random',
  // reductions and softmax-like rows (cpu_reduce.cc / reduce.cu)
  'reduce',
  'softmax_fwd',
  'softmax_bwd',
  'cross_entropy_fwd',
  'cross_entropy_bwd',
  // GEMM (cpu_matmul.cc / matmul.cu)
  'matmul',
  // normalisation (cpu_norm.cc / norm.cu)
  'layer_norm_fwd',
  'layer_norm_bwd',
  'rms_norm_fwd',
  'rms_norm_bwd',
  // fused attention (cpu_attention.cc / attention_fwd.cu, attention_bwd.cu)
  'attention_fwd',
  'attention_bwd',
  // indexing (cpu_index.cc / index.cu)
  'index_select',
  'index_add',
  'gather',
  'scatter_add',
  // rotary embedding (cpu_rope.cc / rope.cu) and the optimizer step (cpu_adamw.cc / adamw.cu)
  'rope',
  'adamw',
  // convolution helpers for the tfjs backend (cpu_conv.cc / conv.cu)
  'im2col',
  'col2im',
  'depthwise_conv2d',
  'pool2d',
  // weight-only quantization: int8 per row, NF4 per block (cpu_quant.cc / quant.cu)
  'quantize',
  'dequantize',
  'quant_matmul',
] as const;

export type KernelName = (typeof KERNELS)[number];

/** The kernel names the loaded addon registered for a device, sorted (empty for CUDA in a CPU-only build). */
export function registeredKernels(device: Device): string[] {
  return native.kernels(DEVICE_CODE[device]).slice().sort();
}
