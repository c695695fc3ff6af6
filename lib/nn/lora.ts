// lora.ts — LoRA adapters and quantized frozen weights on Linear layers (PEFT's LoraLayer and
// bitsandbytes' Linear8bitLt / Linear4bit, reduced to what LLaVA training and inference need).
//
// addLora registers `lora_A` / `lora_B` submodules (parameter `weight` each) on a Linear, so the
// adapter's parameter names are the layer's path + `.lora_A.weight`, as PEFT names them, and freezes the
// layer's own weight and bias. Init as PEFT's default: A kaiming-uniform with a = sqrt(5) (bound
// 1/sqrt(in_features), the same as nn.Linear's weight), B zeros, so the adapted model starts equal to the
// base. Scale alpha / r (alpha / sqrt(r) with rsLoRA). The adapters take the layer's dtype: a bf16 base
// gets bf16 adapters, and AdamW keeps their float32 master copies (lib/optim/adamw.ts).
//
// quantizeLinear replaces a Linear's weight parameter by a QuantizedWeight (the float tensor is freed),
// so it never takes part in gradients; Linear.forward then runs quantLinear / loraLinear over it.
import { Tensor } from '../core/tensor';
import { noGrad } from '../core/autograd';
import { rand, zeros, Generator } from '../ops/creation';
import { sub, mul, add } from '../ops/elementwise';
import { matmul } from '../ops/matmul';
import { to } from '../ops/view';
import { QuantizedWeight, type QuantFormat, NF4_BLOCK } from '../ops/quant';
import { Module } from './module';
import { Linear } from './layers';

export interface LoraSpec {
  r: number;
  alpha: number;
  dropout: number;
  /** alpha / sqrt(r) instead of alpha / r (PEFT use_rslora). */
  rslora?: boolean;
}

/** The scale a LoRA adapter's product is multiplied by. */
export function loraScale(s: Pick<LoraSpec, 'r' | 'alpha' | 'rslora'>): number {
  return s.rslora ? s.alpha / Math.sqrt(s.r) : s.alpha / s.r;
}

/** Every Linear below `root`, with its dotted path. */
export function linearLayers(root: Module, prefix = ''): [string, Linear][] {
  return root.namedModules(prefix).filter((e): e is [string, Linear] => e[1] instanceof Linear);
}

/** Attach a fresh adapter to `layer` and freeze its weight and bias. */
export function addLora(layer: Linear, spec: LoraSpec, generator?: Generator): void {
  if (!Number.isInteger(spec.r) || spec.r < 1) throw new Error(`[lora] r must be a positive integer (got ${spec.r})`);
  if (!Number.isFinite(spec.alpha) || spec.alpha <= 0) throw new Error(`[lora] alpha must be a positive number (got ${spec.alpha})`);
  if (!(spec.dropout >= 0 && spec.dropout < 1)) throw new Error(`[lora] dropout must be in [0, 1) (got ${spec.dropout})`);
  if (layer.lora) throw new Error('[lora] this layer already has an adapter');
  const ref = layer.quantized ? null : layer.weight;
  const dtype = ref?.dtype ?? layer.quantized!.dtype;
  const device = ref?.device ?? layer.quantized!.device;
  const I = layer.inFeatures;
  const bound = 1 / Math.sqrt(I);
  const A = noGrad(() => {
    const u = rand([spec.r, I], { dtype: 'float32', device, generator });
    const a = mul(sub(u, 0.5), 2 * bound);
    return dtype === 'float32' ? a : to(a, dtype);
  });
  const B = zeros([layer.outFeatures, spec.r], { dtype, device });
  layer.registerModule('lora_A', new Module()).registerParameter('weight', A);
  layer.registerModule('lora_B', new Module()).registerParameter('weight', B);
  if (ref) ref.requiresGrad = false;
  if (layer.bias) layer.bias.requiresGrad = false;
  layer.lora = { r: spec.r, alpha: spec.alpha, rslora: !!spec.rslora, scale: loraScale(spec), dropout: spec.dropout, generator };
}

/** The adapter tensors of a layer (null when it has none). */
export function loraTensors(layer: Linear): { A: Tensor; B: Tensor } | null {
  if (!layer.lora) return null;
  return { A: layer.getParameter('lora_A.weight')!, B: layer.getParameter('lora_B.weight')! };
}

/** Add scale * B @ A into a dense weight (computed in float32, rounded once to the weight's dtype). */
export function mergeIntoWeight(layer: Linear, A: Tensor, B: Tensor, scale: number): void {
  if (layer.quantized) throw new Error('[lora] cannot merge an adapter into a quantized weight (load the base unquantized to merge)');
  const W = layer.weight;
  const [O, I] = W.shape;
  if (A.ndim !== 2 || A.shape[1] !== I || B.ndim !== 2 || B.shape[0] !== O || B.shape[1] !== A.shape[0])
    throw new Error(`[lora] adapter shapes A [${A.shape.join(', ')}], B [${B.shape.join(', ')}] do not fit weight [${O}, ${I}]`);
  noGrad(() => {
    const f = (t: Tensor): Tensor => (t.dtype === 'float32' && t.device === W.device ? t : to(to(t, 'float32'), W.device));
    const delta = mul(matmul(f(B), f(A)), scale);
    const merged = add(f(W), delta);
    layer.setParameter('weight', W.dtype === 'float32' ? merged : to(merged, W.dtype));
  });
}

/** Fold a layer's own adapter into its weight and remove the adapter. */
export function mergeLora(layer: Linear): void {
  const t = loraTensors(layer);
  if (!t) return;
  const requires = layer.weight.requiresGrad;
  mergeIntoWeight(layer, t.A, t.B, layer.lora!.scale);
  layer.weight.requiresGrad = requires;
  removeLora(layer);
}

/** Drop a layer's adapter (its tensors are freed). */
export function removeLora(layer: Linear): void {
  const t = loraTensors(layer);
  if (!t) return;
  t.A.dispose();
  t.B.dispose();
  layer.removeModule('lora_A');
  layer.removeModule('lora_B');
  layer.lora = null;
}

/** Replace a layer's float weight by int8 / NF4 storage (frees the float weight). */
export function quantizeLinear(layer: Linear, format: QuantFormat, block = NF4_BLOCK): void {
  if (layer.quantized) throw new Error('[quantize] layer is already quantized');
  const q = QuantizedWeight.quantize(layer.weight, format, block);
  layer.registerParameter('weight', null);
  layer.quantized = q;
  if (layer.bias) layer.bias.requiresGrad = false;
}
