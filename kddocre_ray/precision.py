"""Numeric precision: which one a run uses on its device, and the autocast that applies it.

Pure torch; knows nothing of Ray or MLflow.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import torch

from .errors import InputError


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
            raise InputError("precision fp16 needs a GPU; use bf16 or fp32 on CPU")
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
