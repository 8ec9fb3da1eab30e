"""The per-worker training loop run by Ray Train's TorchTrainer: setup, then epochs.

Plain torch: AdamW with separate encoder / head learning rates, linear warmup and decay
(transformers' scheduler), gradient accumulation and clipping, mixed precision with fp32 losses.
Ray appears only for the worker's rank, `prepare_model` (DDP) and `report` / `get_checkpoint`:
each epoch ends with a dev evaluation and a checkpoint carrying the optimizer and scheduler, so
a killed run continues where it stopped. The loop does not know which stage runs it: the batch
source and the objective are chosen in `setup` from the config.
"""
from __future__ import annotations

import logging
import math
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from ..checkpoint import load_weights, read_schema, save_model
from ..config import KD, Config, from_dict, worker_cpus
from ..data.docred import RelSchema, load_schema
from ..data.features import Feature, doc_features
from ..data.splits import load_split
from ..errors import InputError
from ..evaluation import Reference
from ..inference import Predictor
from ..metrics import official_scores
from ..model.docre import build_model
from ..model.encoder import load_tokenizer
from ..precision import resolve_precision
from ..progress import clock
from ..storage import parquet_files
from .batches import InMemoryBatches, StreamedBatches
from .objective import Objective
from .strategy import Strategy, make_strategy

TRAIN_STATE = "train_state.pt"
PROBE = "probe.pt"
PROGRESS_EVERY_S = 60  # a line of progress at most this often within an epoch


@dataclass
class DevSet:
    docs: list[dict]
    feats: list[Feature]
    facts: set


@dataclass
class Worker:
    """What one Ray Train worker holds for the whole run."""

    conf: Config
    rank: int
    world: int
    device: torch.device
    precision: str
    schema: RelSchema
    tokenizer: object
    log: Callable[[str], None]
    source: InMemoryBatches | StreamedBatches
    dev: DevSet | None
    objective: Objective
    strategy: Strategy
    probe: Feature  # one training document whose logits each checkpoint stores (see _probe)
    state: dict


def train_loop(config: dict) -> None:
    """Ray Train's entry point: epochs until the budget, `max_steps` or early stopping ends it."""
    w = setup(from_dict(config))
    tc = w.conf.train
    while w.state["epoch"] < tc.epochs and not (tc.max_steps and w.state["step"] >= tc.max_steps):
        metrics = run_epoch(w)
        if w.dev is not None:
            metrics.update(evaluate_dev(w))
        w.state["epoch"] += 1
        w.state["history"].append(metrics)
        spent = [h.get("epoch_time_s", 0.0) for h in w.state["history"]]
        left = (tc.epochs - w.state["epoch"]) * sum(spent) / len(spent)  # the epochs to go, at this run's pace
        w.log("[kddocre] " + "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                       for k, v in metrics.items()) + (f"  ETA {clock(left)}" if left else ""))
        save_checkpoint(w, metrics)
        if tc.patience and w.state["bad_epochs"] >= tc.patience:
            w.log(f"[kddocre] early stop: dev F1 did not improve for {tc.patience} epochs")
            break


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def setup(conf: Config) -> Worker:
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    threads = worker_cpus(conf.scale)
    torch.set_num_threads(threads)
    # Ray Train routes worker logging to the driver once (a bare print would be shown twice).
    log = logging.getLogger("kddocre").info if rank == 0 else (lambda *a, **k: None)
    logging.getLogger("kddocre").setLevel(logging.INFO)
    if not conf.scale.verbose:  # Ray Train sets the root logger to INFO here: libraries' lines off (its
        logging.getLogger().setLevel(logging.WARNING)  # per-report "Reporting training result" among them)
    seed_everything(conf.train.seed)
    device = ray.train.torch.get_device()
    precision = resolve_precision(conf.train.precision, device)

    schema = load_schema(conf.data.rel_info)
    tokenizer = load_tokenizer(conf.model.encoder)
    train_docs = load_split(conf.data.train, schema, conf.data.skip_bad_docs, log)
    # a streamed student reads featurized rows: the annotated split only supplies the probe
    # document and the Ign facts, so only its first document is featurized
    train_feats = [doc_features(d, tokenizer, schema) for d in (train_docs[:1] if conf.data.train_rows else train_docs)]
    dev = None
    if conf.data.dev:
        dev_docs = load_split(conf.data.dev, schema, conf.data.skip_bad_docs, log)
        dev = DevSet(dev_docs, [doc_features(d, tokenizer, schema) for d in dev_docs],
                     Reference.from_config(conf, schema).facts if conf.data.train_facts else
                     Reference.from_train(train_docs).facts)
    tc = conf.train
    objective, source, where = batch_source(conf, train_docs, train_feats, schema, device, rank, world, log)
    log(f"[kddocre] {where}, {len(dev.feats) if dev else 0} dev documents, {world} worker(s) x {threads} threads, "
        f"precision {precision}, device {device}, objective {objective}")

    model = build_model(conf.model, schema, tokenizer, seed=tc.seed)
    if tc.init_from:
        model.load_state_dict(load_weights(tc.init_from), strict=True)
        log(f"[kddocre] initialized from {tc.init_from} (weights only: fresh optimizer and schedule)")
    total = math.ceil(len(source) / tc.grad_accum) * tc.epochs
    if tc.max_steps:
        total = min(total, tc.max_steps)
    strategy = make_strategy(tc.strategy, model, tc, precision, device, total, world, tc.deepspeed_config)

    state = {"epoch": 0, "step": 0, "best_f1": -1.0, "bad_epochs": 0, "history": []}
    resumed = ray.train.get_checkpoint()
    if resumed:
        with resumed.as_directory() as d:
            strategy.load(Path(d))
            state = torch.load(Path(d) / TRAIN_STATE, map_location="cpu", weights_only=True)["state"]
        log(f"[kddocre] resumed from checkpoint after epoch {state['epoch']} (step {state['step']})")
    state.update(precision=precision, device=device.type, workers=world)  # what this run really used
    return Worker(conf, rank, world, device, precision, schema, tokenizer, log, source, dev, objective,
                  strategy, train_feats[0], state)


def batch_source(conf: Config, train_docs: list[dict], train_feats: list[Feature], schema: RelSchema,
                 device: torch.device, rank: int, world: int, log):
    """The objective and where its batches come from: the pipeline's student streams its rows
    (with soft labels unless kd = none) from this worker's Ray Data shard; `kddocre train`
    holds its split in memory, with the logits of `distill.teacher` when one is named."""
    tc = conf.train
    if conf.data.train_rows:
        objective = Objective(conf.loss, conf.distill if conf.distill.kd != KD.none else None)
        source = StreamedBatches(ray.train.get_dataset_shard("train"), parquet_rows(conf.data.train_rows),
                                 schema.num_classes, tc.batch_size, tc.seed, conf.pipeline.window, world,
                                 with_teacher=objective.needs_teacher)
        return objective, source, f"{source.rows} streamed rows per worker from {conf.data.train_rows}"
    objective = Objective(conf.loss, conf.distill if conf.distill.teacher else None)
    teacher = teacher_logits(conf, train_docs, schema, device, log) if objective.needs_teacher else None
    source = InMemoryBatches(train_feats, schema.num_classes, tc.batch_size, tc.seed, rank, world, teacher)
    return objective, source, f"{len(train_feats)} train documents"


def parquet_rows(folder: str) -> int:
    """Rows of a Parquet folder, from the files' footers: the schedule's length, known before streaming."""
    fs, files = parquet_files(folder)  # local or in an object store
    return sum(pq.read_metadata(f.path, filesystem=fs).num_rows for f in files)


def teacher_logits(conf: Config, docs: list[dict], schema: RelSchema, device: torch.device, log) -> list[torch.Tensor]:
    """The teacher's logits on the train split, computed in memory once per worker (small
    corpora; the pipeline streams them from the soft-label stage instead)."""
    if conf.distill.kd == KD.none:
        raise InputError("distill.teacher is set but distill.kd=none: choose mse or kl, or drop the teacher")
    if read_schema(conf.distill.teacher) != schema:
        raise InputError(f"the teacher's relation schema differs from {conf.data.rel_info}", path=conf.distill.teacher)
    t0 = time.time()
    teacher = Predictor.load(conf.distill.teacher, device)
    logits = teacher.logits(teacher.features(docs))
    del teacher
    log(f"[kddocre] teacher logits for {len(docs)} documents in {time.time() - t0:.0f}s")
    return logits


def run_epoch(w: Worker) -> dict:
    """One pass over this rank's batches; returns the epoch's training metrics."""
    tc, state = w.conf.train, w.state
    epoch = state["epoch"]
    w.strategy.model.train()
    t0 = last_log = time.time()
    sums: dict[str, float] = {}
    docs_seen = n_batches = 0
    for i, batch in enumerate(w.source.epoch(epoch)):
        with w.strategy.autocast():
            logits = w.strategy.model(batch.features)
        parts = w.objective(logits, batch.labels.to(w.device), batch.teacher)
        w.strategy.backward(parts["loss"])
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + v.item()
        docs_seen += len(batch)
        n_batches += 1
        if time.time() - last_log > PROGRESS_EVERY_S:
            last_log = time.time()
            rate = docs_seen / (last_log - t0)
            w.log(f"[kddocre] epoch {epoch + 1}/{tc.epochs} batch {i + 1}/{len(w.source)} loss "
                  f"{sums['loss'] / n_batches:.4f} {rate * w.world:.2f} docs/s, epoch ETA "
                  f"{(len(w.source) - i - 1) * tc.batch_size / rate:.0f}s")
        boundary = (i + 1) % tc.grad_accum == 0 or i + 1 == len(w.source)
        w.strategy.step(boundary)
        if boundary:
            state["step"] += 1
            if tc.max_steps and state["step"] >= tc.max_steps:
                break
    train_time = time.time() - t0
    metrics = {"epoch": epoch + 1, "step": state["step"]}
    metrics.update({f"train_{k}": v / max(1, n_batches) for k, v in sums.items()})
    metrics.update(train_docs_per_s=docs_seen * w.world / train_time, epoch_time_s=train_time)
    metrics.update(zip(("lr_encoder", "lr_head"), w.strategy.scheduler.get_last_lr()))
    return metrics


def _gather(items: list) -> list:
    if not (dist.is_available() and dist.is_initialized()):
        return items
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, items)
    return [x for part in out for x in part]


def evaluate_dev(w: Worker) -> dict:
    """Dev F1 / Ign F1 of the in-memory model; updates the early-stopping state."""
    lockstep = w.strategy.lockstep_eval
    mine = w.dev.feats if lockstep else w.dev.feats[w.rank::w.world]
    preds = Predictor(w.strategy.module, w.conf, w.schema, w.tokenizer, w.precision, w.device).triples(mine)
    preds = preds if lockstep else _gather(preds)
    scores = official_scores(preds, w.dev.docs, w.dev.facts)
    state = w.state
    improved = scores["f1"] > state["best_f1"]
    state["best_f1"] = max(state["best_f1"], scores["f1"])
    state["bad_epochs"] = 0 if improved else state["bad_epochs"] + 1
    return {"dev_f1": scores["f1"], "dev_ign_f1": scores["ign_f1"]}


@torch.no_grad()
def _probe(w: Worker) -> dict:
    """Logits of one document from the in-memory model at save time: a reloaded checkpoint must
    reproduce them (tests compare the two under every strategy)."""
    w.strategy.module.eval()
    with w.strategy.autocast():
        logits = w.strategy.module([w.probe]).float().cpu()
    return {"title": w.probe.title, "logits": logits}


def save_checkpoint(w: Worker, metrics: dict) -> None:
    """Report the epoch to Ray Train with a checkpoint: weights, optimizer, schedule, loop state."""
    weights = w.strategy.full_state_dict()  # collective under ZeRO-3: every rank calls it
    probe = _probe(w)
    with tempfile.TemporaryDirectory() as tmp:
        w.strategy.save(Path(tmp), w.rank)  # DeepSpeed: every rank writes its shard; Ray merges them
        if w.rank == 0:
            save_model(tmp, w.strategy.module, w.conf, w.schema, w.tokenizer, weights)
            torch.save({"state": w.state}, Path(tmp) / TRAIN_STATE)
            torch.save(probe, Path(tmp) / PROBE)
        checkpoint = ray.train.Checkpoint.from_directory(tmp) if any(Path(tmp).iterdir()) else None
        # "score" ranks checkpoints: dev F1, or the epoch when there is no dev split (latest wins)
        ray.train.report({**metrics, "score": metrics.get("dev_f1", float(metrics["epoch"]))}, checkpoint=checkpoint)
