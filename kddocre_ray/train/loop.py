"""The per-worker training loop run by Ray Train's TorchTrainer.

Plain torch: AdamW with separate encoder / head learning rates, linear warmup and decay
(transformers' scheduler), gradient accumulation and clipping, mixed precision with fp32 losses.
Ray appears only for the worker's rank, `prepare_model` (DDP) and `report` / `get_checkpoint`:
each epoch ends with a dev evaluation and a checkpoint carrying the optimizer and scheduler, so
a killed run continues where it stopped.
"""
from __future__ import annotations

import logging
import math
import tempfile
import time
from pathlib import Path

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from ..checkpoint import save_model
from ..config import Config, from_dict, worker_cpus
from ..data.docred import load_schema
from ..data.features import label_matrix, length_grouped_batches
from ..losses import make_loss
from ..evaluation import Reference
from ..metrics import official_scores
from ..model.encoder import load_tokenizer
from ..task import build_model, features, load_split, predict, resolve_precision, seed_everything
from .strategy import make_strategy

TRAIN_STATE = "train_state.pt"
PROBE = "probe.pt"
PROGRESS_EVERY_S = 60  # a line of progress at most this often within an epoch


def _gather(items: list) -> list:
    if not (dist.is_available() and dist.is_initialized()):
        return items
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, items)
    return [x for part in out for x in part]


@torch.no_grad()
def _probe(strategy, feature) -> dict:
    """Logits of one document from the in-memory model at save time: a reloaded checkpoint must
    reproduce them (tests compare the two under every strategy)."""
    strategy.module.eval()
    with strategy.autocast():
        logits = strategy.module([feature]).float().cpu()
    return {"title": feature.title, "logits": logits}


def train_loop(config: dict) -> None:
    conf: Config = from_dict(config)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    threads = worker_cpus(conf.scale)
    torch.set_num_threads(threads)
    # Ray Train routes worker logging to the driver once (a bare print would be shown twice).
    log = logging.getLogger("kddocre").info if rank == 0 else (lambda *a, **k: None)
    seed_everything(conf.train.seed)

    schema = load_schema(conf.data.rel_info)
    tokenizer = load_tokenizer(conf.model.encoder)
    train_docs = load_split(conf.data.train, schema, conf.data.skip_bad_docs, log)
    train_feats = features(train_docs, tokenizer, schema)
    dev_docs = load_split(conf.data.dev, schema, conf.data.skip_bad_docs, log) if conf.data.dev else []
    dev_feats = features(dev_docs, tokenizer, schema)
    facts = Reference.from_train(train_docs, conf.data.train_facts).facts

    device = ray.train.torch.get_device()
    precision = resolve_precision(conf.train.precision, device)
    log(f"[kddocre] {len(train_feats)} train / {len(dev_feats)} dev documents, {world} worker(s) x "
        f"{threads} threads, precision {precision}, device {device}")

    tc = conf.train
    model = build_model(conf.model, schema, tokenizer, seed=tc.seed)
    per_rank = max(1, math.ceil(len(train_feats) / tc.batch_size) // world)  # batches per epoch and rank
    total = math.ceil(per_rank / tc.grad_accum) * tc.epochs
    if tc.max_steps:
        total = min(total, tc.max_steps)
    strategy = make_strategy(tc.strategy, model, tc, precision, device, total, world, tc.deepspeed_config)
    loss_fn = make_loss(conf.loss)

    state = {"epoch": 0, "step": 0, "best_f1": -1.0, "bad_epochs": 0, "history": []}
    resumed = ray.train.get_checkpoint()
    if resumed:
        with resumed.as_directory() as d:
            strategy.load(Path(d))
            state = torch.load(Path(d) / TRAIN_STATE, map_location="cpu", weights_only=False)["state"]
        log(f"[kddocre] resumed from checkpoint after epoch {state['epoch']} (step {state['step']})")

    lengths = [len(f.input_ids) for f in train_feats]
    while state["epoch"] < tc.epochs and not (tc.max_steps and state["step"] >= tc.max_steps):
        epoch = state["epoch"]
        strategy.model.train()
        batches = length_grouped_batches(lengths, tc.batch_size, tc.seed + epoch)
        if world > 1:  # every rank must take the same number of steps
            batches = batches[: len(batches) - len(batches) % world][rank::world]
        t0, loss_sum, docs_seen, n_batches = time.time(), 0.0, 0, 0
        last_log = t0
        for i, idx in enumerate(batches):
            batch = [train_feats[j] for j in idx]
            labels = torch.cat([label_matrix(f, schema.num_classes) for f in batch]).to(device)
            with strategy.autocast():
                logits = strategy.model(batch)
            loss = loss_fn(logits, labels)
            strategy.backward(loss)
            loss_sum += loss.item()
            docs_seen += len(batch)
            n_batches += 1
            if time.time() - last_log > PROGRESS_EVERY_S:
                last_log = time.time()
                rate = docs_seen / (last_log - t0)
                log(f"[kddocre] epoch {epoch + 1}/{tc.epochs} batch {i + 1}/{len(batches)} loss {loss_sum / n_batches:.4f} "
                    f"{rate * world:.2f} docs/s, epoch ETA {(len(batches) - i - 1) * tc.batch_size / rate:.0f}s")
            boundary = (i + 1) % tc.grad_accum == 0 or i + 1 == len(batches)
            strategy.step(boundary)
            if boundary:
                state["step"] += 1
                if tc.max_steps and state["step"] >= tc.max_steps:
                    break
        train_time = time.time() - t0
        metrics = {"epoch": epoch + 1, "step": state["step"], "train_loss": loss_sum / max(1, n_batches),
                   "train_docs_per_s": docs_seen * world / train_time, "epoch_time_s": train_time}

        if dev_feats:
            # ZeRO-3 gathers weights collectively inside forward: every rank runs the same batches.
            lockstep = getattr(strategy, "stage", 0) == 3
            mine = dev_feats if lockstep else dev_feats[rank::world]
            preds = predict(strategy.module, mine, schema, conf, precision, device)
            preds = preds if lockstep else _gather(preds)
            scores = official_scores(preds, dev_docs, facts)
            metrics.update(dev_f1=scores["f1"], dev_ign_f1=scores["ign_f1"])
            improved = scores["f1"] > state["best_f1"]
            state["best_f1"] = max(state["best_f1"], scores["f1"])
            state["bad_epochs"] = 0 if improved else state["bad_epochs"] + 1
        state["epoch"] = epoch + 1
        state["history"].append(metrics)
        log("[kddocre] " + "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()))

        weights = strategy.full_state_dict()  # collective under ZeRO-3: every rank calls it
        probe = _probe(strategy, train_feats[0])
        with tempfile.TemporaryDirectory() as tmp:
            strategy.save(Path(tmp), rank)  # DeepSpeed: every rank writes its shard; Ray merges them
            if rank == 0:
                save_model(tmp, strategy.module, conf, schema, tokenizer, weights)
                torch.save({"state": state}, Path(tmp) / TRAIN_STATE)
                torch.save(probe, Path(tmp) / PROBE)
            checkpoint = ray.train.Checkpoint.from_directory(tmp) if any(Path(tmp).iterdir()) else None
            # "score" ranks checkpoints: dev F1, or the epoch when there is no dev split (latest wins)
            ray.train.report({**metrics, "score": metrics.get("dev_f1", float(epoch + 1))}, checkpoint=checkpoint)
        if tc.patience and state["bad_epochs"] >= tc.patience:
            log(f"[kddocre] early stop: dev F1 did not improve for {tc.patience} epochs")
            break
