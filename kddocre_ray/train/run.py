"""`kddocre train`: fit on Ray, keep the best checkpoint, score it on dev and test, write the run.

Run folder (`output_dir/name`):
  config.yaml      the resolved config
  fingerprint.json the result-changing config values (paths as content digests): a rerun that
                   differs in any of them is refused instead of resuming the wrong run
  ray/             Ray Train's checkpoints and snapshot (a rerun resumes from here)
  checkpoint/      the best model by dev F1, reloadable by `kddocre evaluate` / `predict`
  result.json      test predictions in DocRED submission format (dev ones if there is no test)
  metrics.json     dev and test metrics, per-epoch history, timings
Files are written atomically; metrics.json is written last and marks the run complete. The
folder may be in an object store (output_dir=s3://...): Ray Train writes its checkpoints there
itself and the rest is uploaded (storage.py).
"""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import ray
import torch

from .. import layout
from ..config import Config, to_dict, to_yaml, worker_cpus
from ..data.docred import load_schema
from ..data.splits import load_split
from ..errors import InputError
from ..evaluation import Reference, format_metrics
from ..fingerprint import changed_keys, digest, result_values
from ..inference import Predictor
from ..storage import Location, RemotePath, location, read_json, rmtree, upload, write_json
from ..tracking import MlflowReporter
from .inputs import check_train_inputs
from .strategy import DS_DIR, OPTIM_STATE
from .trainer import fit, start_cluster
from .worker import TRAIN_STATE


def check_run_dir(conf: Config, overwrite: bool = False) -> None:
    """A finished run is kept unless `overwrite`; an unfinished one is resumed only with the same
    result-changing config. Reads only: nothing is written or started on a refusal."""
    run_dir = location(conf.output_dir) / conf.name
    if (run_dir / layout.METRICS).exists() and not overwrite:
        raise FileExistsError(f"{run_dir} holds a finished run; pick another name= or pass --overwrite")
    if (run_dir / layout.FINGERPRINT).exists() and not overwrite:
        changed = changed_keys(read_json(run_dir / layout.FINGERPRINT), result_values(conf))
        if changed:
            raise InputError(f"{run_dir} is an unfinished run started with another config; resuming it would mix "
                             f"two settings. Changed: {'; '.join(changed)}. Rerun with the same settings to resume, "
                             f"or pick another name= or pass --overwrite")


def prepare_run_dir(conf: Config, overwrite: bool = False) -> Location:
    """The run folder, checked (`check_run_dir`), emptied with `overwrite`, with its config and
    fingerprint written."""
    check_run_dir(conf, overwrite)
    run_dir = location(conf.output_dir) / conf.name
    if overwrite:
        rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / layout.CONFIG).write_text(to_yaml(conf))
    write_json(result_values(conf), run_dir / layout.FINGERPRINT, indent=2)
    return run_dir


def run_train(conf: Config, overwrite: bool = False, log=print,
              callbacks: list | None = None) -> dict:
    """Train, keep the best model, score it and write the run folder; returns its metrics.

    The run is one MLflow run (tracking.py) unless `tracking.enabled` is false, opened once the
    folder is settled (`overwrite` clears it first); a resumed run continues the MLflow run its
    folder's tracking.json names. A caller that tracks the run itself (a pipeline stage) passes
    the Ray Train `callbacks` it wants instead (e.g. its per-epoch tracking.EpochMetrics).
    Every input is checked first (inputs.py), before Ray starts."""
    check_train_inputs(conf)
    check_run_dir(conf, overwrite)
    start_cluster(conf)
    run_dir = prepare_run_dir(conf, overwrite)
    if callbacks is not None or not conf.tracking.enabled:
        return _train_and_score(conf, run_dir, log, list(callbacks or []))
    reporter = MlflowReporter(conf, run_dir, log=log)
    reporter.started("train", digest(read_json(run_dir / layout.FINGERPRINT)), to_dict(conf))
    try:
        metrics = _train_and_score(conf, run_dir, log, reporter.callbacks("train"))
    except BaseException:
        reporter.ended(None)
        raise
    reporter.finished("train", run_dir, {"train_time_s": metrics["train_time_s"]}, metrics["history"],
                      [layout.METRICS, layout.RESULT])
    return metrics


def _train_and_score(conf: Config, run_dir: Location, log, callbacks: list) -> dict:
    start = time.time()
    best, latest = fit(conf, run_dir, callbacks)
    train_time = time.time() - start
    with latest.as_directory() as d:
        state = torch.load(Path(d) / TRAIN_STATE, weights_only=True)["state"]
    keep_model(best, run_dir)

    # a split to score: the test split, else dev (a student pretrained without dev has neither)
    scored = score_on_cluster(conf, run_dir / layout.CHECKPOINT) if conf.data.dev or conf.data.test else {}
    out = {"name": conf.name, "precision": state["precision"], "device": state["device"], "workers": state["workers"],
           "train_time_s": train_time, "history": state["history"], "scoring": scored.get("scoring")}
    for split in ("dev", "test"):
        if split in scored:
            out[split] = scored[split]
            log(f"[kddocre] {split} ({out[split]['docs']} documents)\n{format_metrics(out[split])}")
    if "preds" in scored:
        write_json(scored["preds"], run_dir / layout.RESULT)
    write_json(out, run_dir / layout.METRICS, indent=2)
    log(f"[kddocre] run written to {run_dir}")
    return out


def keep_model(best: ray.train.Checkpoint, run_dir: Location) -> None:
    """`run_dir/checkpoint`: the best checkpoint without what only resuming needs (optimizer
    states). Built aside and renamed into place on a local disk, uploaded in an object store (a
    killed upload is redone by the rerun: metrics.json, the run's marker, is written after it)."""
    remote = isinstance(run_dir, RemotePath)
    tmp = Path(tempfile.mkdtemp()) / layout.CHECKPOINT if remote else run_dir / f".{layout.CHECKPOINT}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    best.to_directory(str(tmp))
    for training_only in (TRAIN_STATE, OPTIM_STATE):  # optimizer states are for resuming, not for use
        (tmp / training_only).unlink(missing_ok=True)
    shutil.rmtree(tmp / DS_DIR, ignore_errors=True)
    rmtree(run_dir / layout.CHECKPOINT)
    if remote:
        upload(tmp, run_dir / layout.CHECKPOINT)
        shutil.rmtree(tmp.parent, ignore_errors=True)
    else:
        tmp.rename(run_dir / layout.CHECKPOINT)


def score_on_cluster(conf: Config, checkpoint: Location) -> dict:
    """Score a checkpoint in a Ray task with a training worker's resources, so that it runs on
    the device the model trained on (a GPU when `scale.use_gpu`), in the precision it trained in
    (fp16 needs a GPU: resolving it on the driver's CPU would fail)."""
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    # placement_group=None: inside a Tune trial the task would otherwise be captured by the
    # trial's own placement group, which holds no CPU (sweep.py) and could never run it
    task = ray.remote(_score).options(num_cpus=worker_cpus(conf.scale), num_gpus=1 if conf.scale.use_gpu else 0,
                                      scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=None))
    return ray.get(task.remote(conf, str(checkpoint)))


def _score(conf: Config, checkpoint: str) -> dict:
    """Dev and test metrics (Ign facts from the train split) and the predictions of the test
    split, or of dev when there is no test split."""
    torch.set_num_threads(worker_cpus(conf.scale))
    predictor = Predictor.load(checkpoint)
    schema = load_schema(conf.data.rel_info)
    reference = Reference.from_config(conf, schema)
    out: dict = {"scoring": {"device": str(predictor.device), "precision": predictor.precision}}
    for split in ("dev", "test"):
        src = getattr(conf.data, split)
        if src is None:
            continue
        docs = load_split(src, schema, conf.data.skip_bad_docs)
        t0 = time.time()
        preds = predictor.predict_docs(docs)
        out[split] = {**reference.score(preds, docs), "docs": len(docs), "predict_time_s": time.time() - t0}
        if split == "test" or conf.data.test is None:
            out["preds"] = preds
    return out
