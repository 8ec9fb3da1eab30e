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
import os
import tempfile
import time
from pathlib import Path

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from ..checkpoint import load_model, save_model, unwrap
from ..config import Config, from_dict
from ..data.docred import load_schema
from ..data.features import label_matrix, length_grouped_batches
from ..losses import make_loss
from ..metrics import official_scores, train_facts, read_fact_file
from ..model.encoder import load_tokenizer
from ..task import autocast, build_model, features, load_split, predict, resolve_precision, seed_everything

TRAIN_STATE = "train_state.pt"
PROGRESS_EVERY_S = 60  # a line of progress at most this often within an epoch


def _gather(items: list) -> list:
    if not (dist.is_available() and dist.is_initialized()):
        return items
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, items)
    return [x for part in out for x in part]


def train_loop(config: dict) -> None:
    conf: Config = from_dict(config)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    threads = conf.scale.cpus_per_worker or max(1, (os.cpu_count() or 1) // conf.scale.num_workers)
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
    facts = read_fact_file(conf.data.train_facts) if conf.data.train_facts else train_facts(train_docs)

    device = ray.train.torch.get_device()
    precision = resolve_precision(conf.train.precision, device)
    log(f"[kddocre] {len(train_feats)} train / {len(dev_feats)} dev documents, {world} worker(s) x "
        f"{threads} threads, precision {precision}, device {device}")

    model = build_model(conf.model, schema, tokenizer, seed=conf.train.seed)
    tc = conf.train
    head = {id(p) for p in model.head_parameters()}
    encoder_params = [p for p in model.parameters() if id(p) not in head]
    model = ray.train.torch.prepare_model(model)
    optimizer = torch.optim.AdamW(
        [{"params": encoder_params, "lr": tc.encoder_lr}, {"params": unwrap(model).head_parameters(), "lr": tc.head_lr}],
        eps=tc.adam_eps, weight_decay=tc.weight_decay)
    per_rank = max(1, math.ceil(len(train_feats) / tc.batch_size) // world)  # batches per epoch and rank
    total = math.ceil(per_rank / tc.grad_accum) * tc.epochs
    if tc.max_steps:
        total = min(total, tc.max_steps)
    from transformers import get_linear_schedule_with_warmup
    scheduler = get_linear_schedule_with_warmup(optimizer, int(tc.warmup_ratio * total), total)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    loss_fn = make_loss(conf.loss)

    state = {"epoch": 0, "step": 0, "best_f1": -1.0, "bad_epochs": 0, "history": []}
    resumed = ray.train.get_checkpoint()
    if resumed:
        with resumed.as_directory() as d:
            saved, _, _, _ = load_model(d)
            unwrap(model).load_state_dict(saved.state_dict())
            ts = torch.load(Path(d) / TRAIN_STATE, map_location="cpu", weights_only=False)
        optimizer.load_state_dict(ts["optimizer"])
        scheduler.load_state_dict(ts["scheduler"])
        state = ts["state"]
        log(f"[kddocre] resumed from checkpoint after epoch {state['epoch']} (step {state['step']})")

    lengths = [len(f.input_ids) for f in train_feats]
    while state["epoch"] < tc.epochs and not (tc.max_steps and state["step"] >= tc.max_steps):
        epoch = state["epoch"]
        model.train()
        batches = length_grouped_batches(lengths, tc.batch_size, tc.seed + epoch)
        if world > 1:  # every rank must take the same number of steps
            batches = batches[: len(batches) - len(batches) % world][rank::world]
        t0, loss_sum, docs_seen, n_batches = time.time(), 0.0, 0, 0
        last_log = t0
        optimizer.zero_grad()
        for i, idx in enumerate(batches):
            batch = [train_feats[j] for j in idx]
            labels = torch.cat([label_matrix(f, schema.num_classes) for f in batch]).to(device)
            with autocast(precision, device):
                logits = model(batch)
            loss = loss_fn(logits, labels)
            scaler.scale(loss / tc.grad_accum).backward()
            loss_sum += loss.item()
            docs_seen += len(batch)
            n_batches += 1
            if time.time() - last_log > PROGRESS_EVERY_S:
                last_log = time.time()
                rate = docs_seen / (last_log - t0)
                log(f"[kddocre] epoch {epoch + 1}/{tc.epochs} batch {i + 1}/{len(batches)} loss {loss_sum / n_batches:.4f} "
                    f"{rate * world:.2f} docs/s, epoch ETA {(len(batches) - i - 1) * tc.batch_size / rate:.0f}s")
            if (i + 1) % tc.grad_accum == 0 or i + 1 == len(batches):
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), tc.max_grad_norm)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                optimizer.zero_grad()
                state["step"] += 1
                if tc.max_steps and state["step"] >= tc.max_steps:
                    break
        train_time = time.time() - t0
        metrics = {"epoch": epoch + 1, "step": state["step"], "train_loss": loss_sum / max(1, n_batches),
                   "train_docs_per_s": docs_seen * world / train_time, "epoch_time_s": train_time}

        if dev_feats:
            mine = dev_feats[rank::world]
            preds = _gather(predict(unwrap(model), mine, schema, conf, precision, device))
            scores = official_scores(preds, dev_docs, facts)
            metrics.update(dev_f1=scores["f1"], dev_ign_f1=scores["ign_f1"])
            improved = scores["f1"] > state["best_f1"]
            state["best_f1"] = max(state["best_f1"], scores["f1"])
            state["bad_epochs"] = 0 if improved else state["bad_epochs"] + 1
        state["epoch"] = epoch + 1
        state["history"].append(metrics)
        log("[kddocre] " + "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()))

        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if rank == 0:
                save_model(tmp, model, conf, schema, tokenizer)
                torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                            "state": state}, Path(tmp) / TRAIN_STATE)
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            # "score" ranks checkpoints: dev F1, or the epoch when there is no dev split (latest wins)
            ray.train.report({**metrics, "score": metrics.get("dev_f1", float(epoch + 1))}, checkpoint=checkpoint)
        if tc.patience and state["bad_epochs"] >= tc.patience:
            log(f"[kddocre] early stop: dev F1 did not improve for {tc.patience} epochs")
            break
