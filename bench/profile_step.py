"""Where a training step's time goes: torch.profiler over a few full steps, top operators.

    python bench/profile_step.py --docs 16 --precision bf16
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kddocre_ray.config import load_config  # noqa: E402
from kddocre_ray.data.docred import load_schema  # noqa: E402
from kddocre_ray.data.features import label_matrix, length_grouped_batches  # noqa: E402
from kddocre_ray.losses import make_loss  # noqa: E402
from kddocre_ray.model.encoder import load_tokenizer  # noqa: E402
from kddocre_ray.task import autocast, build_model, features, load_split  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(REPO / "configs" / "redocred_mini" / "teacher.yaml"))
    p.add_argument("--docs", type=int, default=16)
    p.add_argument("--precision", default="bf16")
    p.add_argument("--rows", type=int, default=15)
    args = p.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    conf = load_config(args.config, [f"data.train.end={args.docs}"])
    schema = load_schema(conf.data.rel_info)
    tok = load_tokenizer(conf.model.encoder)
    feats = features(load_split(conf.data.train, schema), tok, schema)
    model = build_model(conf.model, schema, tok)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    loss_fn = make_loss(conf.loss)
    batches = length_grouped_batches([len(f.input_ids) for f in feats], conf.train.batch_size, 0)
    cpu = torch.device("cpu")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for idx in batches:
            batch = [feats[i] for i in idx]
            labels = torch.cat([label_matrix(f, schema.num_classes) for f in batch])
            with record_function("forward"), autocast(args.precision, cpu):
                logits = model(batch)
            with record_function("loss"):
                loss = loss_fn(logits, labels)
            with record_function("backward"):
                loss.backward()
            with record_function("optimizer"):
                opt.step()
                opt.zero_grad()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
