"""The arithmetic ceiling of train_speed's row (b): how many matrix FLOPs a full training step
does per document against the bare encoder's forward+backward (row (a)), on the same documents.

    python bench/head_flops.py --docs 64

If the full step ran at the encoder's FLOP rate, (b) / (a) would equal encoder FLOPs / full-step
FLOPs; no implementation of the same model can beat that ratio on a compute-bound machine.
Counts come from torch's FlopCounterMode (matmul-like ops only: elementwise work such as the
per-pair outer products and the optimizer is not in them, so real steps sit below the ceiling).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_speed import REPO, load_documents

from kddocre_ray.data.features import label_matrix
from kddocre_ray.losses import make_loss
from kddocre_ray.model.docre import build_model
from kddocre_ray.model.encoder import encode, load_tokenizer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="atlop,teacher", help="files of configs/redocred_mini/")
    p.add_argument("--docs", type=int, default=64)
    args = p.parse_args()
    print("| config | pairs / doc | tokens / doc | encoder GFLOP / doc | full step GFLOP / doc | ceiling (b)/(a) |")
    print("|---|---|---|---|---|---|")
    for name in args.configs.split(","):
        conf, schema, feats = load_documents(str(REPO / "configs" / "redocred_mini" / f"{name}.yaml"),
                                             [f"data.train.end={args.docs}"])
        tok = load_tokenizer(conf.model.encoder)
        model = build_model(conf.model, schema, tok, seed=conf.train.seed)
        loss_fn = make_loss(conf.loss)
        bs = conf.train.batch_size
        enc = full = 0
        for i in range(0, len(feats), bs):
            batch = feats[i:i + bs]

            with FlopCounterMode(display=False) as counter:
                out = encode(model.encoder, [f.input_ids for f in batch], conf.model.max_length,
                             conf.model.chunk_overlap, tok.pad_token_id)
                sum(s.float().sum() + a.float().sum() for s, a in out).backward()
            enc += counter.get_total_flops()
            with FlopCounterMode(display=False) as counter:
                labels = torch.cat([label_matrix(f, schema.num_classes) for f in batch])
                loss_fn(model(batch), labels).backward()
            full += counter.get_total_flops()
            model.zero_grad()
        n = len(feats)
        pairs = sum(f.n_pairs for f in feats) / n
        tokens = sum(len(f.input_ids) for f in feats) / n
        print(f"| {name} | {pairs:.0f} | {tokens:.0f} | {enc / n / 1e9:.1f} | {full / n / 1e9:.1f} | {enc / full:.2f} |")


if __name__ == "__main__":
    main()
