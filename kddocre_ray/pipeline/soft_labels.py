"""Soft labels: Ray Data streams the ingested corpus through a pool of teacher actors.

read_parquet (featurized rows) -> map_batches(TeacherLogits) on an actor pool
(`compute=ActorPoolStrategy(size=pool)`, one GPU per actor when the cluster has GPUs) ->
write_parquet: the same rows with the teacher's logits for every ordered entity pair appended
as a float16 list (layout in rows.py). Each actor loads the teacher once; no process holds the
corpus, and rows are keyed by (corpus fingerprint, doc_index), never by position or title.

A teacher actor that dies mid-corpus (a killed process, a lost node) is restarted and its batch
retried: Ray Data's defaults for actor pools (`max_restarts=-1`, `max_task_retries=-1`), which
this stage keeps; every row is still written once (tests/test_soft_labels.py kills one).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.dataset as pads
import ray
import torch
from ray.data import ActorPoolStrategy

from ..data.rows import features_of, with_teacher_logits
from ..heap import trim
from ..inference import Predictor
from ..storage import Location, parquet_files


class TeacherLogits:
    """A Ray Data actor: the teacher loaded once (on the actor's GPU if it has one), then its
    logits appended to every batch of rows; freed memory goes back to the OS after each batch."""

    def __init__(self, checkpoint: str, threads: int):
        torch.set_num_threads(threads)
        self.predictor = Predictor.load(checkpoint)
        self.trim = trim

    def __call__(self, table: pa.Table) -> pa.Table:
        out = with_teacher_logits(table, self.predictor.logits(features_of(table)))
        self.trim()
        return out


# Ray Data keeps an actor's output batches until they fill a block of this size (128 MiB by
# default: the logits of about 1,700 DocRED-sized documents). With the default a teacher actor's
# private memory grew over a 10,000-document corpus; with this cap it stayed flat
# (bench/results/teacher_inference_2cpu.md).
BLOCK_BYTES = 16 * 2**20

# Ray starts its workers at nice 15 so that its own processes stay responsive. A teacher actor is
# the stage's compute, and at nice 15 every wake-up of the driver or of Ray's daemons preempts one
# of its torch threads. The variable makes Ray leave these actors at the driver's priority (no
# privilege needed: nothing is raised). The gain on 2 cores is within run-to-run noise
# (bench/results/teacher_inference_2cpu.md).
ACTOR_ENV = {"RAY_worker_niceness": "0"}


def actor_cpus(pool_size: int, cluster_cpus: float) -> float:
    """Logical CPUs each teacher actor reserves: one, unless the pool would then hold every CPU of
    the cluster but one. Ray Data starts its actors before any other task, so a pool holding every
    CPU leaves its read and write tasks (one CPU each) waiting forever: on 2 cores a pool of 2 hung
    (ray-project/ray#44687). Such a pool shares all but one CPU; reservations are Ray's bookkeeping,
    the torch threads each actor runs are set apart from them."""
    return min(1.0, max(0.0, cluster_cpus - 1) / pool_size)


@dataclass(frozen=True)
class PoolOptions:
    """What a benchmark or a test changes in the actor pool; the pipeline keeps the defaults.

    `actor`: a TeacherLogits (a subclass in bench/teacher_inference.py times its batches) built
    with `actor_kwargs`; `block_bytes` caps the blocks an actor sends on (None: Ray Data's
    default); `actor_env`: the environment of the actors and of the write tasks that follow them."""

    actor: type = TeacherLogits
    actor_kwargs: dict = field(default_factory=dict)
    block_bytes: int | None = BLOCK_BYTES
    actor_env: dict = field(default_factory=lambda: dict(ACTOR_ENV))


def on_actor_pool(rows_dir: Location, checkpoint: Location, pool_size: int, use_gpu: bool, threads: int,
                  batch_size: int, options: PoolOptions = PoolOptions()) -> ray.data.Dataset:
    """The featurized rows of `rows_dir` through a pool of `options.actor` (a TeacherLogits, or
    predict.py's DocTriples), each loading the model of `checkpoint` once: a lazy Dataset.

    Each actor reserves at most one logical CPU (`actor_cpus`; and one GPU with `use_gpu`) but runs
    `threads` torch threads (config.actor_threads): reserving all of them would leave Ray Data no
    CPU for its read and write tasks on a small machine, and the pipeline would stall.
    """
    context = ray.data.DataContext.get_current()  # a Dataset keeps the context it was made under
    default_block = context.target_max_block_size
    context.target_max_block_size = options.block_bytes or default_block
    try:
        # Blocks of one batch each: Ray Data reads a shard as one block (small shards merged), and a
        # block is one actor's task, so a pool of several actors had all but one idle.
        ds = ray.data.read_parquet(str(rows_dir)).repartition(target_num_rows_per_block=batch_size)
        kwargs = {"checkpoint": str(checkpoint), "threads": threads, **options.actor_kwargs}
        cpus = actor_cpus(pool_size, ray.cluster_resources().get("CPU", 0))
        return ds.map_batches(options.actor, fn_constructor_kwargs=kwargs, batch_size=batch_size,
                              batch_format="pyarrow", compute=ActorPoolStrategy(size=pool_size), num_cpus=cpus,
                              num_gpus=1 if use_gpu else 0, runtime_env={"env_vars": options.actor_env})
    finally:
        context.target_max_block_size = default_block


def write_soft_labels(rows_dir: Location, checkpoint: Location, out_dir: Location, pool_size: int, use_gpu: bool,
                      threads: int, batch_size: int, log=print, options: PoolOptions = PoolOptions()) -> dict:
    """Run the teacher over every row of `rows_dir` (`on_actor_pool`); returns the counts a manifest records."""
    t0 = time.time()
    ds = on_actor_pool(rows_dir, checkpoint, pool_size, use_gpu, threads, batch_size, options)
    # The write tasks run at the actors' priority: at Ray's default (nice 15) they got a sliver of a
    # core beside busy actors at nice 0, so the written blocks queued in the object store, growing
    # with the corpus, until the last batch (bench/results/teacher_inference_2cpu.md).
    ds.write_parquet(str(out_dir), ray_remote_args={"runtime_env": {"env_vars": options.actor_env}})
    seconds = time.time() - t0
    fs, files = parquet_files(out_dir)
    n = pads.dataset([f.path for f in files], format="parquet", filesystem=fs).to_table(columns=["n_entities"])
    n = n.column(0).to_numpy().astype("int64")
    rows, pairs = len(n), int((n * (n - 1)).sum())
    size = sum(f.size for f in files)
    stats = {"documents": rows, "pairs": pairs, "bytes": size, "bytes_per_document": size / max(1, rows),
             "seconds": seconds, "documents_per_s": rows / seconds, "pool_size": pool_size, "shards": len(files)}
    log(f"[kddocre] soft labels: {rows} documents in {seconds:.0f}s ({stats['documents_per_s']:.2f} docs/s), "
        f"{stats['bytes_per_document'] / 1000:.1f} KB per document")
    return stats
