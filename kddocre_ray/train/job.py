"""`kddocre train`: fit on Ray, keep the best checkpoint, score it on dev and test, write the run.

Run folder (`output_dir/name`):
  config.yaml      the resolved config
  ray/             Ray Train's checkpoints and snapshot (a rerun resumes from here)
  checkpoint/      the best model by dev F1, reloadable by `kddocre evaluate` / `predict`
  result.json      test predictions in DocRED submission format (dev ones if there is no test)
  metrics.json     dev and test metrics, per-epoch history, timings
Files are written atomically; metrics.json is written last and marks the run complete.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch

from ..config import Config, to_yaml
from ..data.docred import write_json
from ..evaluation import CHECKPOINT, Reference, format_metrics, load_for_inference, predict_docs
from ..task import load_split, resolve_precision
from .loop import TRAIN_STATE
from .runner import fit
from .strategy import DS_DIR, OPTIM_STATE


def run_train(conf: Config, overwrite: bool = False, max_failures: int = 0, log=print) -> dict:
    run_dir = Path(conf.output_dir) / conf.name
    if (run_dir / "metrics.json").exists():
        if not overwrite:
            raise FileExistsError(f"{run_dir} holds a finished run; pick another name= or pass --overwrite")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(to_yaml(conf))

    start = time.time()
    best, latest = fit(conf, run_dir, max_failures)
    train_time = time.time() - start
    with latest.as_directory() as d:
        history = torch.load(Path(d) / TRAIN_STATE, weights_only=False)["state"]["history"]
    tmp = run_dir / f".{CHECKPOINT}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    best.to_directory(str(tmp))
    for training_only in (TRAIN_STATE, OPTIM_STATE):  # optimizer states are for resuming, not for use
        (tmp / training_only).unlink(missing_ok=True)
    shutil.rmtree(tmp / DS_DIR, ignore_errors=True)
    shutil.rmtree(run_dir / CHECKPOINT, ignore_errors=True)
    tmp.rename(run_dir / CHECKPOINT)

    model, conf, schema, tokenizer = load_for_inference(run_dir)
    reference = Reference.from_config(conf, schema)
    precision = resolve_precision(conf.train.precision, torch.device("cpu"))
    out = {"name": conf.name, "precision": precision, "train_time_s": train_time, "history": history}
    for split in ("dev", "test"):
        src = getattr(conf.data, split)
        if src is None:
            continue
        docs = load_split(src, schema, conf.data.skip_bad_docs, log)
        t0 = time.time()
        preds = predict_docs(model, conf, schema, tokenizer, docs)
        out[split] = {**reference.score(preds, docs), "docs": len(docs), "predict_time_s": time.time() - t0}
        log(f"[kddocre] {split} ({len(docs)} documents)\n{format_metrics(out[split])}")
        if split == "test" or conf.data.test is None:
            write_json(preds, run_dir / "result.json")
    write_json(out, run_dir / "metrics.json", indent=2)
    log(f"[kddocre] run written to {run_dir}")
    return out
