"""Training throughput against the encoder's own cost (documents per second, median of repeats).

    python bench/train_speed.py --docs 64 --repeats 3            # Re-DocRED-mini train documents

Rows, each in fp32 and bf16 (same documents, batch 4, length-grouped):
  (a) bare encoder forward + backward over the documents (chunked like the model): the physical reference
  (b) our full training step in one process (model, loss, backward, clip, the loop's fused AdamW)
  (c) Ray Train, 1 worker          (d) Ray Train DDP, 2 workers          (e) DeepSpeed ZeRO-2, 2 workers
(c)-(e) run the real `kddocre train` path for one epoch and read the loop's own documents/s
(worker start-up excluded). (a) and (b) run their repeats in one spawned child process, so the
driver never computes beside the Ray rows (it did once, and slowed them by a fifth). Ratios are
to (a) in the same precision; the last column of (b) is the share of its time spent outside the
encoder, from (a)'s time on the same documents.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kddocre_ray.config import load_config  # noqa: E402
from kddocre_ray.data.docred import load_schema  # noqa: E402
from kddocre_ray.data.features import doc_features, label_matrix, length_grouped_batches  # noqa: E402
from kddocre_ray.data.splits import load_split  # noqa: E402
from kddocre_ray.losses import make_loss  # noqa: E402
from kddocre_ray.model.docre import build_model  # noqa: E402
from kddocre_ray.model.encoder import encode, load_tokenizer  # noqa: E402
from kddocre_ray.precision import autocast  # noqa: E402
from kddocre_ray.train.strategy import make_optimizer  # noqa: E402


def load_documents(config: str, overrides: list[str]):
    """The config and the features of its train split."""
    conf = load_config(config, overrides)
    schema = load_schema(conf.data.rel_info)
    tokenizer = load_tokenizer(conf.model.encoder)
    feats = [doc_features(d, tokenizer, schema) for d in load_split(conf.data.train, schema)]
    return conf, schema, feats


def in_process(conf, feats, schema, precision: str, encoder_only: bool) -> float:
    """Documents/s of one pass over `feats` in this process."""
    torch.set_num_threads(os.cpu_count() or 1)
    tok = load_tokenizer(conf.model.encoder)
    model = build_model(conf.model, schema, tok, seed=conf.train.seed)
    device = torch.device("cpu")
    opt = make_optimizer(model, conf.train, device)
    loss_fn = make_loss(conf.loss)
    batches = length_grouped_batches([len(f.input_ids) for f in feats], conf.train.batch_size, 0)
    start = time.perf_counter()
    for idx in batches:
        batch = [feats[i] for i in idx]
        with autocast(precision, device):
            if encoder_only:
                out = encode(model.encoder, [f.input_ids for f in batch], conf.model.max_length,
                             conf.model.chunk_overlap, tok.pad_token_id)
                loss = sum(seq.float().sum() + att.float().sum() for seq, att in out)
            else:
                labels = torch.cat([label_matrix(f, schema.num_classes) for f in batch])
                loss = loss_fn(model(batch), labels)
        loss.backward()
        if not encoder_only:
            torch.nn.utils.clip_grad_norm_(model.parameters(), conf.train.max_grad_norm)
            opt.step()
        opt.zero_grad()
    return len(feats) / (time.perf_counter() - start)


def _passes(config: str, overrides: list[str], precision: str, encoder_only: bool, repeats: int) -> list[float]:
    conf, schema, feats = load_documents(config, overrides)
    return [in_process(conf, feats, schema, precision, encoder_only) for _ in range(repeats)]


def in_child(config: str, overrides: list[str], precision: str, encoder_only: bool, repeats: int) -> list[float]:
    """`repeats` passes of `in_process` in a fresh process (the first pass warms it up like the
    later ones of the same process)."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_passes, (config, overrides, precision, encoder_only, repeats))


def through_ray(conf_path: str, overrides: list[str], precision: str, out: str) -> float:

    from kddocre_ray.train.run import run_train

    conf = load_config(conf_path, [*overrides, f"train.precision={precision}", "train.epochs=1",
                                   "data.dev=null", "data.test=null", f"output_dir={out}",
                                   f"name=speed_{time.time_ns()}"])
    metrics = run_train(conf, log=lambda *a: None)
    return metrics["history"][0]["train_docs_per_s"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(REPO / "configs" / "redocred_mini" / "teacher.yaml"))
    p.add_argument("--docs", type=int, default=64, help="how many train documents each pass covers")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--rows", default="a,b,c,d,e")
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args()

    base = [f"data.train.end={args.docs}"]
    conf = load_config(args.config, base)
    ds = ["train.strategy=deepspeed", f"train.deepspeed_config={REPO}/configs/deepspeed/zero2.json"]
    n = args.repeats

    def ray_row(overrides: list[str]):
        return lambda prec, out: [through_ray(args.config, [*base, *overrides], prec, out) for _ in range(n)]

    rows = {
        "a": ("bare encoder fwd+bwd", lambda prec, out: in_child(args.config, base, prec, True, n)),
        "b": ("full step, one process", lambda prec, out: in_child(args.config, base, prec, False, n)),
        "c": ("Ray Train, 1 worker", ray_row([])),
        "d": ("Ray Train DDP, 2 workers", ray_row(["scale.num_workers=2"])),
        "e": ("DeepSpeed ZeRO-2, 2 workers", ray_row([*ds, "scale.num_workers=2"])),
    }
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as out:
        for prec in args.precisions.split(","):
            for key in args.rows.split(","):
                name, fn = rows[key]
                runs = fn(prec, out)
                results.setdefault(prec, {})[key] = runs
                print(f"  {prec} ({key}) {name}: {', '.join(f'{r:.2f}' for r in runs)} docs/s", flush=True)

    print(f"\n{args.docs} documents of {Path(conf.data.train.path).name}, batch {conf.train.batch_size}, "
          f"{conf.model.encoder}, axial layers {conf.model.axial_layers}, median of {args.repeats}; {os.cpu_count()} cores\n")
    print("| row | precision | docs/s (median) | ratio to (a) | share outside encoder |")
    print("|---|---|---|---|---|")
    for prec, by_row in results.items():
        ref = statistics.median(by_row["a"]) if "a" in by_row else None
        for key, runs in by_row.items():
            med = statistics.median(runs)
            ratio = f"{med / ref:.2f}" if ref else "-"
            outside = f"{1 - med / ref:.0%}" if ref and key == "b" else ""
            print(f"| ({key}) {rows[key][0]} | {prec} | {med:.2f} | {ratio} | {outside} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
