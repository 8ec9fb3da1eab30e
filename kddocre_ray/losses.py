"""Relation-extraction and distillation losses over pair logits (P, C); column 0 is TH.

Labels are multi-hot (P, C) with column 0 set exactly for pairs without a relation. Every loss
is computed in fp32 whatever precision the model ran in, and averaged over pairs.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .config import LossConfig

BIG = 1e30


def _split(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Positive relation mask (TH column cleared) and the TH one-hot."""
    pos = labels.clone()
    pos[:, 0] = 0.0
    th = torch.zeros_like(labels)
    th[:, 0] = 1.0
    return pos, th


def _th_over_negatives(logits: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """-log P(TH) among TH and the negative classes: TH must outrank every negative."""
    neg = logits - pos * BIG  # positives out; TH (column 0) and negatives stay
    return -F.log_softmax(neg, dim=-1)[:, 0]


def atl_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """ATLOP's adaptive-thresholding loss: positives above TH (softmax over positives + TH),
    TH above negatives."""
    logits = logits.float()
    pos, th = _split(labels)
    pos_logits = logits - (1 - pos - th) * BIG
    loss_pos = -(F.log_softmax(pos_logits, dim=-1) * pos).sum(1)
    return (loss_pos + _th_over_negatives(logits, pos)).mean()


def afl_loss(logits: torch.Tensor, labels: torch.Tensor, gamma: float = 0.5,
             weight: str = "paper") -> torch.Tensor:
    """Adaptive Focal Loss (Tan et al. 2022, Eq. 9-11).

    Each positive class r is ranked against TH alone, P(r) = sigmoid(l_r - l_TH), and weighted by
    (1 - P(r))^gamma so that easy (often frequent) relations give way to hard long-tail ones;
    TH is ranked above all negatives as in ATL. `weight="official"` uses 1 + (1 - P)^gamma, as
    the authors' released code does.
    """
    logits = logits.float()
    pos, _ = _split(labels)
    margin = logits - logits[:, :1]
    log_p = F.logsigmoid(margin)
    # (1 - P)^gamma in log space: (1 - exp(log_p)).pow(gamma) rounds 1 - P to 0 once a margin
    # passes about 17, where pow's gradient (gamma < 1) is inf and inf * 0 turns every gradient NaN
    focal = torch.exp(gamma * F.logsigmoid(-margin))
    if weight == "official":
        focal = 1 + focal
    loss_pos = -(focal * log_p * pos).sum(1)
    return (loss_pos + _th_over_negatives(logits, pos)).mean()


def bce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Independent sigmoid per relation (TH column unused; decode with a fixed 0 threshold)."""
    pos, _ = _split(labels)
    per_class = F.binary_cross_entropy_with_logits(logits.float()[:, 1:], pos[:, 1:], reduction="none")
    return per_class.sum(1).mean()


def mse_distill(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """KD-DocRE's distillation: regress the teacher's logits (mean over pairs and classes)."""
    return F.mse_loss(student.float(), teacher.float())


def kl_distill(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Hinton-style KL(teacher || student) over classes at temperature T, scaled by T^2,
    averaged over pairs."""
    t = temperature
    log_s = F.log_softmax(student.float() / t, dim=-1)
    log_t = F.log_softmax(teacher.float() / t, dim=-1)
    return F.kl_div(log_s, log_t, log_target=True, reduction="batchmean") * t * t


def make_loss(cfg: LossConfig) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if cfg.name == "afl":
        return lambda lo, la: afl_loss(lo, la, cfg.gamma, cfg.afl_weight)
    if cfg.name == "atl":
        return atl_loss
    if cfg.name == "bce":
        return bce_loss
    raise ValueError(f"loss.name={cfg.name!r}; choose afl, atl or bce")
