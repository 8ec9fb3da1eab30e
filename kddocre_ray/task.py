"""What both the Ray workers and the command line need: splits, model, precision, prediction.

Pure torch and transformers; knows nothing of Ray or MLflow.
"""
from __future__ import annotations

import contextlib
import random
from pathlib import Path

import numpy as np
import torch

from .config import Config, DataSource, ModelConfig
from .data.docred import RelSchema, read_docs
from .data.features import Feature, doc_features
from .decode import decode, to_triples
from .model.docre import DocREModel
from .model.encoder import load_encoder


def read_valid(path: str, schema: RelSchema, skip_bad: bool = False, log=print) -> list[dict]:
    """Validated documents; with `skip_bad`, each skipped one is reported and counted."""
    docs, bad = read_docs(path, schema, skip_bad=skip_bad)
    for err in bad:
        log(f"skipped bad document: {err}")
    if bad:
        log(f"{path}: skipped {len(bad)} bad documents")
    return docs


def load_split(src: DataSource, schema: RelSchema, skip_bad: bool = False, log=print) -> list[dict]:
    return read_valid(src.path, schema, skip_bad, log)[src.start:src.end]


def features(docs: list[dict], tokenizer, schema: RelSchema) -> list[Feature]:
    return [doc_features(d, tokenizer, schema) for d in docs]


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
    """'auto' -> bf16 where the hardware runs it natively, fp16 on older GPUs, else fp32."""
    if name != "auto":
        if name == "fp16" and device.type != "cuda":
            raise ValueError("precision fp16 needs a GPU; use bf16 or fp32 on CPU")
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if _cpu_has_bf16() else "fp32"


def autocast(precision: str, device: torch.device):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


@torch.no_grad()
def predict(model: DocREModel, feats: list[Feature], schema: RelSchema, conf: Config,
            precision: str, device: torch.device) -> list[dict]:
    """Triples for documents, in DocRED submission format; batches of similar length."""
    model.eval()
    order = sorted(range(len(feats)), key=lambda i: len(feats[i].input_ids))
    size = conf.train.eval_batch_size
    triples = []
    for k in range(0, len(order), size):
        batch = [feats[i] for i in order[k:k + size]]
        with autocast(precision, device):
            logits = model(batch)
        pred = decode(logits, conf.model.num_labels, fixed_threshold=conf.loss.name == "bce")
        triples.extend(to_triples(pred, batch, schema.id2rel))
    return triples
