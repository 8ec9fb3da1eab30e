"""What both the Ray workers and the command line need: splits, model, seeds, precision.

Pure torch and transformers; knows nothing of Ray or MLflow.
"""
from __future__ import annotations

import contextlib
import logging
import random
from pathlib import Path

import numpy as np
import torch

from .config import DataSource, ModelConfig
from .data.docred import RelSchema, read_docs
from .model.docre import DocREModel
from .model.encoder import load_encoder


def read_valid(path: str, schema: RelSchema, skip_bad: bool = False, log=print) -> list[dict]:
    """Validated documents; with `skip_bad`, each skipped one is reported and counted."""
    docs, bad = read_docs(path, schema, skip_bad=skip_bad)
    report_skipped(path, bad, log)
    return docs


def report_skipped(path: str, bad: list, log=print) -> None:
    """Each skipped document with its file, index, title and field, then their count."""
    for err in bad:
        log(f"skipped bad document: {err}")
    if bad:
        log(f"{path}: skipped {len(bad)} bad documents")


def load_split(src: DataSource, schema: RelSchema, skip_bad: bool = False, log=print) -> list[dict]:
    return read_valid(src.path, schema, skip_bad, log)[src.start:src.end]


def build_model(cfg: ModelConfig, schema: RelSchema, tokenizer, encoder=None, seed: int = 0) -> DocREModel:
    torch.manual_seed(seed)
    encoder = encoder if encoder is not None else load_encoder(cfg.encoder, seed)
    return DocREModel(encoder, cfg, schema.num_classes, tokenizer.pad_token_id)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(name: str, device: torch.device) -> str:
    """'auto' -> bf16 where the hardware runs it natively, fp16 on older GPUs, else fp32.

    A forced bf16 on a CPU without avx512_bf16 / AMX runs, but emulated, many times slower than
    fp32, so it warns.
    """
    if name != "auto":
        if name == "fp16" and device.type != "cuda":
            raise ValueError("precision fp16 needs a GPU; use bf16 or fp32 on CPU")
        if name == "bf16" and device.type == "cpu" and not _cpu_has_bf16():
            logging.getLogger("kddocre").warning(
                "precision bf16 on a CPU without native bf16 (no avx512_bf16 / AMX): it is emulated and "
                "can be many times slower than fp32; train.precision=auto picks fp32 here")
        return str(name)  # a plain string (train.precision is a config Choice): it is saved with checkpoints
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if _cpu_has_bf16() else "fp32"


def autocast(precision: str, device: torch.device):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)
