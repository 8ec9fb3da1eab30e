"""The grouped bilinear alone: ATLOP's materialized outer products vs the sliced layer
(kddocre_ray/model/bilinear.py), forward + backward at the benchmark's shapes.

    python bench/bilinear.py --pairs 1600 --out 384 --repeats 5

1,600 pairs is a batch of 4 Re-DocRED documents (~400 ordered pairs each); out 384 is the
teacher's projection into the pair table (97 is the ATLOP head's classifier). Each variant and
precision runs in its own fresh process, so its peak resident memory (ru_maxrss, minus the
process's resident memory before the first step) is its own. Prints milliseconds per step
(median of the repeats after one warm-up step) and peak memory, with ratios sliced / materialized.
"""
from __future__ import annotations

import argparse
import multiprocessing
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kddocre_ray.config import ModelConfig  # noqa: E402


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _measure(variant: str, precision: str, pairs: int, out: int, chunk: int, repeats: int, threads: int):
    import torch
    from torch import nn

    from kddocre_ray.model.bilinear import GroupedBilinear, block_outer

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    emb, block = 768, 64
    layer = GroupedBilinear(emb, block, out, chunk)
    zh = torch.randn(pairs, emb, requires_grad=True)
    zt = torch.randn(pairs, emb, requires_grad=True)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            h, t = torch.tanh(zh), torch.tanh(zt)  # stand-ins for the extractors' outputs
            if variant == "sliced":
                y = layer(h, t)
            else:
                y = nn.functional.linear(block_outer(h, t, layer.k), layer.weight, layer.bias)  # whole, like ATLOP
        y.float().square().mean().backward()
        layer.zero_grad(set_to_none=True)
        zh.grad = zt.grad = None

    base = _rss_mb()
    step()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    return statistics.median(times) * 1000, peak


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=1600)
    p.add_argument("--out", type=int, default=384)
    p.add_argument("--chunk", type=int, default=ModelConfig().bilinear_chunk, help="pairs per slice of the sliced layer")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    ctx = multiprocessing.get_context("spawn")
    print(f"{args.pairs} pairs, emb 768 x block 64 -> {args.out}, slice {args.chunk} pairs, "
          f"{args.threads} threads, median of {args.repeats}\n")
    print("| precision | materialized ms | sliced ms | time ratio | materialized peak MB | sliced peak MB | memory ratio |")
    print("|---|---|---|---|---|---|---|")
    for prec in args.precisions.split(","):
        res = {}
        for variant in ("materialized", "sliced"):
            with ctx.Pool(1) as pool:
                res[variant] = pool.apply(_measure, (variant, prec, args.pairs, args.out, args.chunk,
                                                     args.repeats, args.threads))
        (tm, mm), (ts, ms) = res["materialized"], res["sliced"]
        print(f"| {prec} | {tm:.0f} | {ts:.0f} | {ts / tm:.2f} | {mm:.0f} | {ms:.0f} | {ms / mm:.2f} |", flush=True)


if __name__ == "__main__":
    main()
