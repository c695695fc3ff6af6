// bf16_cases.ts — end-to-end bf16 on the CPU beside PyTorch's bf16 on the same shapes (issue 17):
//   * a LLaMA training step, 4 layers of d 512 (MLP 1376, 8 heads, vocab 4096), B2 x T256: the language
//     half of the LLaVA-shaped step. bf16 weights and gradients; our AdamW keeps f32 moments and f32
//     master weights for bf16 parameters; torch's AdamW on bf16 parameters keeps bf16 moments and no
//     master copy. Peer: torch_peer.py `llama_train` (an HF-style LLaMA written in torch).
//   * the frozen half of that step: a CLIP vision tower, 4 layers of d 256 (MLP 1024, 4 heads, quick_gelu),
//     B2 x 224x224 images in patches of 14 (257 tokens), forward under noGrad. Peer: torch_peer.py
//     `clip_forward` (HF CLIPVisionModel's layout in torch).
//   * greedy decode, batch 1, through 2 layers with LLaMA-7B's sizes (d 4096, 32 heads of 128, MLP
//     11008, vocab 32000): 1 prompt token + 16 steps with a KV cache, weights N(0, 0.02). Peer:
//     torch_peer.py `llama_decode` (the same loop in plain torch).
// ratio = torch ms / ours (> 1: we are faster); tokens/s beside.
import { BenchOptions, CaseRecord, peerMs, report, selected, timeIt } from './harness';
import { cpuTorchPeer } from './cpu_kernels';
import { llamaTrain } from './gpu_cases';
import { build, decode } from './decode_cases';
import * as L from '../lib';
import { CLIPVisionModel } from '../lib/models/clip';

const dev = 'cpu' as const;
const TRAIN = { kind: 'llama_train' as const, B: 2, T: 256, layers: 4, hidden: 512, inter: 1376, heads: 8, vocab: 4096, steps: 5 };
const CLIP = { kind: 'clip_forward', B: 2, image: 224, patch: 14, layers: 4, hidden: 256, inter: 1024, heads: 4, steps: 10 };
const DEC = { kind: 'llama_decode', layers: 2, hidden: 4096, inter: 11008, heads: 32, vocab: 32000, steps: 16, reps: 3 };

export function runBf16Cases(o: BenchOptions): void {
  const train: CaseRecord = {
    op: 'llama_train_step',
    scenario: "LLaMA 4L d512 (the LLaVA-shaped step's LLM)",
    dtype: 'bfloat16',
    device: dev,
    shape: `B${TRAIN.B} T${TRAIN.T}`,
  };
  const dec: CaseRecord = {
    op: 'llama_greedy_decode',
    scenario: `llama7b_decode (C 4096, I 11008, 32 heads, ${DEC.layers} layers, vocab 32000)`,
    dtype: 'bfloat16',
    device: dev,
    shape: `T1 x ${DEC.steps} steps`,
  };
  const clip: CaseRecord = {
    op: 'clip_vision_forward',
    scenario: "ViT 4L d256 (the LLaVA-shaped step's frozen vision tower)",
    dtype: 'bfloat16',
    device: dev,
    shape: `B${CLIP.B} ${CLIP.image}x${CLIP.image} p${CLIP.patch}`,
  };
  const want = [train, clip, dec].filter((c) => selected(o, c));
  if (!want.length) return;
  const key = (c: CaseRecord): string => `${c.op} ${c.scenario}`;
  const specs = [
    ...(want.includes(train) ? [{ key: key(train), ...TRAIN, dtype: 'bfloat16' }] : []),
    ...(want.includes(clip) ? [{ key: key(clip), ...CLIP, dtype: 'bfloat16' }] : []),
    ...(want.includes(dec) ? [{ key: key(dec), ...DEC, dtype: 'bfloat16' }] : []),
  ];
  const peer = cpuTorchPeer(o, specs, 5);
  const base = (c: CaseRecord) => (peer ? { name: peer.version ?? 'torch', ms: peerMs(peer, key(c)) } : null);
  if (want.includes(train)) {
    const r = llamaTrain(TRAIN, dev, 30_000);
    const memory_note =
      'engine: bf16 weight + grad, f32 m, v and master (16 B/param); peer: torch AdamW (not fused on the CPU) on bf16 params, bf16 m and v (8 B/param)';
    report(train, r.t, 'tokens', TRAIN.B * TRAIN.T, base(train), { ...r.extra, memory_note });
  }
  if (want.includes(clip)) {
    const tower = new CLIPVisionModel(
      {
        hidden_size: CLIP.hidden,
        intermediate_size: CLIP.inter,
        num_hidden_layers: CLIP.layers,
        num_attention_heads: CLIP.heads,
        image_size: CLIP.image,
        patch_size: CLIP.patch,
        hidden_act: 'quick_gelu',
      },
      { dtype: 'bfloat16', device: dev },
    );
    const gen = new L.Generator(7);
    const px = L.randn([CLIP.B, 3, CLIP.image, CLIP.image], { dtype: 'bfloat16', device: dev, generator: gen });
    try {
      L.noGrad(() => {
        for (const [name, p] of tower.namedParameters())
          if (!/layer_?norm|layrnorm/.test(name))
            L.tidy(() => L.copyInto(p, L.mul(L.randn(p.shape, { dtype: p.dtype, device: dev, generator: gen }), 0.02)));
      });
      const t = timeIt(() => L.noGrad(() => tower.forward(px).dispose()), { device: dev, warmup: 1, reps: CLIP.steps, minReps: 2, maxMs: 30_000 });
      report(clip, t, 'tokens', CLIP.B * ((CLIP.image / CLIP.patch) ** 2 + 1), base(clip));
    } finally {
      px.dispose();
      tower.dispose();
    }
  }
  if (want.includes(dec)) {
    const m = build(DEC.layers, { C: DEC.hidden, I: DEC.inter, H: DEC.heads, V: DEC.vocab });
    try {
      m.to('bfloat16');
      const t = timeIt(() => decode(m, DEC.steps), { device: dev, warmup: 1, reps: DEC.reps, minReps: 2, maxMs: 30_000 });
      report(dec, t, 'tokens', DEC.steps + 1, base(dec));
    } finally {
      m.dispose();
    }
  }
}
