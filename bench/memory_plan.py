"""GPU memory arithmetic for the paper's setting (configs/docred_roberta_large.yaml: RoBERTa-large
plus ATLOP's head and 2 axial layers) on 1, 4 and 8 V100s (16 GB) under DeepSpeed ZeRO 0-3 in
fp16 with Adam, at DocRED's largest document (42 entities, 1,722 ordered pairs).

    python bench/memory_plan.py [--entities 42] [--tokens 1024] [--docs-per-gpu 1]

Parameters are counted on the real model, built on PyTorch's meta device (no weights, no memory).
Model states per GPU follow the ZeRO paper (fp16 weights 2 bytes/param, fp16 gradients 2, fp32
master weights + Adam moments 12; stage 1 shards the 12, stage 2 also the gradients, stage 3
everything). Encoder activations use Korthikanti et al. (2022), s*h*(34 + 5*a*s/h) bytes per layer
and 512-token chunk in fp16 without recomputation; head activations are counted from the shapes
the head materializes. This is arithmetic; measured once on an H200 (bench/gpu_check.py, fp16,
one GPU) torch reserved 12.86 GB where it says 11.3: bench/results/gpu_h200.md.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
GB = 1e9
V100_GB = 16.0
# what CUDA, the allocator's fragmentation and DeepSpeed's buffers take before any tensor of ours
OVERHEAD_GB = 1.5


def roberta_large_config():
    """RoBERTa-large's architecture (no weights: nothing is downloaded)."""
    from transformers import RobertaConfig

    return RobertaConfig(vocab_size=50265, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                         intermediate_size=4096, max_position_embeddings=514, type_vocab_size=1)


def parameters(conf) -> dict[str, int]:
    from transformers import RobertaModel

    from kddocre_ray.model.docre import DocREModel

    with torch.device("meta"):
        model = DocREModel(RobertaModel(roberta_large_config(), add_pooling_layer=False), conf.model, num_classes=97)
    parts: dict[str, int] = {}
    for name, p in model.named_parameters():
        part = name.split(".")[0]
        parts[part] = parts.get(part, 0) + p.numel()
    return parts


def states_gb(n: int, stage: int, gpus: int) -> float:
    """fp16 params + fp16 grads + fp32 (master, m, v), per GPU, under ZeRO `stage` on `gpus`."""
    p, g, o = 2 * n, 2 * n, 12 * n
    if stage >= 1:
        o /= gpus
    if stage >= 2:
        g /= gpus
    if stage >= 3:
        p /= gpus
    return (p + g + o) / GB


def encoder_activations_gb(tokens: int, window: int = 512, overlap: int = 128, layers: int = 24,
                           hidden: int = 1024, heads: int = 16) -> tuple[float, int]:
    from kddocre_ray.model.encoder import chunk_starts

    chunks = len(chunk_starts(tokens, window - 2, overlap))
    s = window
    per_layer = s * hidden * (34 + 5 * heads * s / hidden)
    return chunks * layers * per_layer / GB, chunks


def head_activations_gb(entities: int, tokens: int, conf, hidden: int = 1024, heads: int = 16) -> float:
    """The head's saved tensors for one document, fp16 (2 bytes) unless noted."""
    m = conf.model
    pairs = entities * (entities - 1)
    dim = m.pair_dim or hidden
    b = 2
    pooled = 2 * pairs * hidden * b + pairs * heads * tokens * b  # head / tail embeddings, context attention
    context = pairs * hidden * b
    extract = 2 * (pairs * 2 * hidden + pairs * m.emb_size) * b  # extractor inputs and tanh outputs
    bilinear = min(pairs, m.bilinear_chunk) * m.emb_size * m.block_size * b  # one slice of outer products
    table = entities * entities * dim * b
    # per axial layer and direction: layer norm, q / k / v, attention output, residual; maps (n heads n n)
    axial = m.axial_layers * 2 * (6 * table + entities * m.axial_heads * entities * entities * b)
    logits = pairs * 97 * 4  # fp32 for the loss
    return (pooled + context + extract + bilinear + table + axial + logits) / GB


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--entities", type=int, default=42, help="entities in the document (DocRED's largest: 42)")
    p.add_argument("--tokens", type=int, default=1024, help="subword tokens of the document, markers included")
    p.add_argument("--docs-per-gpu", type=int, default=1, help="documents per GPU per step (train.batch_size)")
    p.add_argument("--config", default=str(REPO / "configs" / "docred_roberta_large.yaml"))
    args = p.parse_args()
    from kddocre_ray.config import load_config

    conf = load_config(args.config)
    parts = parameters(conf)
    n = sum(parts.values())
    print(f"parameters: {n / 1e6:.1f} M = " + " + ".join(f"{k} {v / 1e6:.1f} M" for k, v in parts.items()))
    enc, chunks = encoder_activations_gb(args.tokens)
    head = head_activations_gb(args.entities, args.tokens, conf)
    act = args.docs_per_gpu * (enc + head)
    print(f"activations per document of {args.tokens} tokens ({chunks} chunks) and {args.entities} entities "
          f"({args.entities * (args.entities - 1)} pairs): encoder {enc:.2f} GB + head {head:.2f} GB; "
          f"x {args.docs_per_gpu} document(s) per GPU = {act:.2f} GB")
    print(f"\nper-GPU memory (GB) = model states + activations + {OVERHEAD_GB} overhead, on {V100_GB:.0f} GB V100s:\n")
    print("| GPUs | ZeRO 0 | ZeRO 1 | ZeRO 2 | ZeRO 3 | global batch (docs) |")
    print("|---|---|---|---|---|---|")
    for gpus in (1, 4, 8):
        cells = []
        for stage in range(4):
            total = states_gb(n, stage, gpus) + act + OVERHEAD_GB
            cells.append(f"{total:.1f}" + ("" if total <= V100_GB else " (too big)"))
        print(f"| {gpus} | " + " | ".join(cells) + f" | {gpus * args.docs_per_gpu} |")
    worst = math.ceil(args.entities * (args.entities - 1) / conf.model.bilinear_chunk)
    print(f"\nthe grouped bilinear runs {worst} slices of <= {conf.model.bilinear_chunk} pairs for this document; "
          "lower model.bilinear_chunk to trade speed for memory")


if __name__ == "__main__":
    main()
