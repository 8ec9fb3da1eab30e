"""Driver side of training: start (or join) Ray, run the TorchTrainer, return the best checkpoint.

Ray's own checkpoint manager keeps the best checkpoint by dev F1 plus the latest one; rerunning
with the same run folder finds Ray's snapshot there and resumes from the latest checkpoint.
"""
from __future__ import annotations

import ray
import ray.data
from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from .. import layout
from ..cluster import check_room, init_ray, train_log_level
from ..config import Config, to_dict, worker_cpus
from ..errors import InputError, RunFailed, input_error_in
from ..storage import Location
from .worker import train_loop


def reserved_cpus(conf: Config) -> float:
    """Logical CPUs each worker reserves. The pipeline's student streams its rows through Ray
    Data; Ray Train splits them across the workers (streaming_split, equal=True) and each worker
    reads its shard. Ray Data's listing and read tasks need a CPU of their own: the workers
    together leave one free (they still run `worker_cpus` torch threads), else on a small
    machine the read never starts."""
    cpus: float = worker_cpus(conf.scale)
    return max(cpus - 1 / conf.scale.num_workers, 0.25) if conf.data.train_rows else cpus


def start_cluster(conf: Config) -> None:
    """Start or join Ray, and make sure the workers fit it (cluster.check_room)."""
    init_ray(conf)
    check_room(conf, conf.scale.num_workers, reserved_cpus(conf))


def fit(conf: Config, run_dir: Location, callbacks: list = ()) -> tuple[ray.train.Checkpoint, ray.train.Checkpoint]:
    """Train; returns the checkpoint with the best dev F1 (the latest one without a dev split)
    and the latest checkpoint."""
    start_cluster(conf)
    sc = conf.scale
    cpus = reserved_cpus(conf)
    datasets = {"train": ray.data.read_parquet(conf.data.train_rows)} if conf.data.train_rows else None
    trainer = TorchTrainer(
        train_loop,
        datasets=datasets,
        train_loop_config=to_dict(conf),
        scaling_config=ScalingConfig(num_workers=sc.num_workers, use_gpu=sc.use_gpu,
                                     resources_per_worker={"CPU": cpus}),
        run_config=RunConfig(
            name=layout.RAY_DIR, storage_path=str(run_dir),
            checkpoint_config=CheckpointConfig(num_to_keep=2, checkpoint_score_attribute="score",
                                               checkpoint_score_order="max"),
            failure_config=FailureConfig(max_failures=sc.max_failures), callbacks=list(callbacks),
            logging_config=LoggingConfig(log_level=train_log_level(conf))),
    )
    try:
        result = trainer.fit()
        if result.error:
            raise result.error
    except ray.train.WorkerGroupError as e:
        rank, error = min(e.worker_failures.items())
        bad_input = input_error_in(error)
        if bad_input is not None:  # found by a worker (a file changed since the door, or one it sees otherwise)
            raise InputError(str(bad_input)) from None
        first = (str(error).strip().splitlines() or [""])[-1]
        raise RunFailed(f"training worker {rank} failed: {first[:300]} (its traceback is in the log above)") from None
    best = max(result.best_checkpoints, key=lambda cm: cm[1]["score"])[0]
    return best, result.checkpoint
