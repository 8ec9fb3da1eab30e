"""Where a training step's time goes: torch.profiler over one pass of train_speed's full step (b).

    python bench/profile_step.py --docs 16 --precision bf16
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_speed import REPO, in_process, load_documents


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(REPO / "configs" / "redocred_mini" / "teacher.yaml"))
    p.add_argument("--docs", type=int, default=16)
    p.add_argument("--precision", default="bf16")
    p.add_argument("--rows", type=int, default=15)
    args = p.parse_args()
    conf, schema, feats = load_documents(args.config, [f"data.train.end={args.docs}"])
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        in_process(conf, feats, schema, args.precision, encoder_only=False)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
