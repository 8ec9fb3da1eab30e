r"""Ray Data's `streaming_split` coordinator when its consumers are slower than its reader, as in the
student stage (two training workers behind a split of the soft-label rows): the coordinator's CPU
per second of wall time, and the rows/s the consumers got, without and with
`cluster.PauseIdleSteps` (which pauses a scheduling step that has no task in flight).

    python bench/split_idle.py --seconds 60 --repeats 3

Each run is a fresh local Ray cluster of 2 CPUs: a synthetic dataset (rows of --row-kb KB made by
a map task, as a Parquet read makes them) split between two consumer actors, each taking a batch
of 8 rows every --step-s seconds (a training step), for --seconds. The variants alternate, so a
machine's drift hits both; the figures are medians over --repeats runs of each, and the ratio is
of the medians.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import ray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kddocre_ray.cluster import _with_pause  # noqa: E402


@ray.remote(num_cpus=0.5)
class Consumer:
    def take(self, split, seconds: float, step_s: float) -> int:
        rows, end = 0, time.time() + seconds
        for batch in split.iter_batches(batch_size=8):
            rows += len(batch["id"])
            time.sleep(step_s)
            if time.time() > end:
                break
        return rows


def _payload(batch: dict, row_kb: int) -> dict:
    return {"id": batch["id"], "logits": [np.zeros(row_kb * 512, np.float16) for _ in batch["id"]]}


def one_run(pause: bool, seconds: float, step_s: float, row_kb: int) -> tuple[float, float]:
    """(coordinator CPU seconds per wall second, rows/s both consumers took)."""
    env = {"RAY_DATA_EXECUTION_CALLBACKS": _with_pause("")} if pause else {}
    ray.init(address="local", num_cpus=2, logging_level="ERROR", runtime_env={"env_vars": env},
             include_dashboard=False)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        ds = ray.data.range(10_000_000, override_num_blocks=20_000).map_batches(_payload, fn_kwargs={"row_kb": row_kb})
        splits = ds.streaming_split(2, equal=True)
        consumers = [Consumer.remote() for _ in splits]
        started = [c.take.remote(s, seconds, step_s) for c, s in zip(consumers, splits)]
        time.sleep(min(10.0, seconds / 4))  # the pipeline fills, the coordinator starts
        coordinator = next(p for p in psutil.process_iter(["cmdline"])
                           if (p.info["cmdline"] or [""])[0].startswith("ray::SplitCoordinator"))
        t0, c0 = time.time(), sum(coordinator.cpu_times()[:2])
        rows = sum(ray.get(started))
        cpu = (sum(coordinator.cpu_times()[:2]) - c0) / (time.time() - t0)
        return cpu, rows / seconds
    finally:
        ray.shutdown()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60.0, help="how long the consumers take rows, per run")
    p.add_argument("--step-s", type=float, default=0.3, help="a consumer's time per batch of 8 rows")
    p.add_argument("--row-kb", type=int, default=58, help="KB per row (a soft-label row is about 58)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    os.environ.pop("RAY_DATA_EXECUTION_CALLBACKS", None)
    figures: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for i in range(args.repeats):
        for pause in (False, True):
            cpu, rate = one_run(pause, args.seconds, args.step_s, args.row_kb)
            figures[pause].append((cpu, rate))
            print(f"[split_idle] run {i + 1} {'with' if pause else 'without'} the pause: coordinator "
                  f"{cpu:.3f} CPU s per s, consumers {rate:.1f} rows/s", flush=True)
    med = {k: (statistics.median(c for c, _ in v), statistics.median(r for _, r in v)) for k, v in figures.items()}
    for pause, (cpu, rate) in med.items():
        print(f"median {'with' if pause else 'without'} the pause: coordinator {cpu:.3f} CPU s per s, "
              f"consumers {rate:.1f} rows/s")
    print(f"ratio (without / with): coordinator CPU x{med[False][0] / max(med[True][0], 1e-9):.1f}, "
          f"consumer rows/s x{med[False][1] / med[True][1]:.3f}")


if __name__ == "__main__":
    main()
