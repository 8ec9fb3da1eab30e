"""Private memory (USS) of the teacher actor's work in a plain loop, every 10 batches: does it
grow with the documents seen, and does giving freed memory back (malloc_trim) or another Arrow
memory pool stop it? (docs: bench/results/teacher_inference_2cpu.md, "Private memory").

    python bench/actor_memory.py --mode none --docs 2000      # the actor without its per-batch trim
    python bench/actor_memory.py --mode trim --docs 2000      # malloc_trim(0) after each batch
    python bench/actor_memory.py --mode sysalloc --docs 2000  # no trim, pyarrow's system memory pool

Same inputs as bench/teacher_inference.py (DocRED test documents repeated, tiny random encoder,
light head, untrained teacher), batches of 64 documents, 2 torch threads.
"""
from __future__ import annotations

import argparse
import ctypes
import multiprocessing
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import teacher_inference as ti  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=["none", "trim", "sysalloc"], default="none")
    p.add_argument("--docs", type=int, default=2000)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp())
    corpus, teacher = ti.make_inputs("tiny-random", args.docs, work, ["model.emb_size=128", "model.block_size=16"])
    with multiprocessing.get_context("spawn").Pool(1) as pool:  # ingest with Ray, in its own process
        pool.apply(ti._ingest, (str(corpus), str(work / "rows"), "tiny-random"))

    import pyarrow as pa
    import pyarrow.parquet as pq

    from kddocre_ray.data.rows import features_of, with_teacher_logits
    from kddocre_ray.pipeline.soft_labels import TeacherLogits

    if args.mode == "sysalloc":
        pa.set_memory_pool(pa.system_memory_pool())
    actor = TeacherLogits(str(teacher), 2)
    libc = ctypes.CDLL("libc.so.6")
    uss, batches = [], 0
    for f in sorted((work / "rows").glob("*.parquet")):
        table = pq.read_table(f)
        for start in range(0, table.num_rows, 64):
            batch = table.slice(start, 64)
            with_teacher_logits(batch, actor.predictor.logits(features_of(batch)))  # the actor's work, untrimmed
            if args.mode == "trim":
                libc.malloc_trim(0)
            batches += 1
            if batches % 10 == 0:
                uss.append(round(ti.private_mb()["uss_mb"]))
    print(f"{args.mode}: {args.docs} documents, Arrow pool {pa.default_memory_pool().backend_name}, "
          f"USS every 10 batches (MB): {uss}")


if __name__ == "__main__":
    main()
