"""What a training step minimises, returned in parts so each is logged on its own.

L = L_RE + weight * L_KD (KD-DocRE, Sec. 3.3): L_RE is the configured relation loss (AFL, ATL or
BCE) on the batch's labels, which are distant labels during student pretraining; L_KD pulls the
student's pair logits towards the teacher's (MSE, as in the paper, or KL with temperature).
Without a teacher (kd = none) this is the plain loss: the teacher itself, fine-tuning, and the NA
baseline (distant pretraining on labels alone).
"""
from __future__ import annotations

import torch

from ..config import DistillConfig, LossConfig
from ..losses import kl_distill, make_loss, mse_distill


class Objective:
    def __init__(self, loss: LossConfig, distill: DistillConfig | None = None):
        self.re_loss = make_loss(loss)
        self.kd = distill.kd if distill is not None else "none"
        self.weight = distill.weight if distill is not None else 0.0
        self.temperature = distill.temperature if distill is not None else 1.0

    def __repr__(self) -> str:
        if not self.needs_teacher:
            return "re_loss"
        kd = "mse" if self.kd == "mse" else f"kl(T={self.temperature:g})"
        return f"re_loss + {self.weight:g} * {kd}"

    @property
    def needs_teacher(self) -> bool:
        return self.kd != "none"

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor,
                 teacher: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """{"loss", "re_loss"[, "kd_loss"]}; `teacher` holds the teacher's logits for the same
        pairs in the same order as `logits` (P, C)."""
        re = self.re_loss(logits, labels)
        if not self.needs_teacher:
            return {"loss": re, "re_loss": re}
        if teacher is None:
            raise ValueError(f"distill.kd={self.kd} needs the teacher's logits on every batch")
        if teacher.shape != logits.shape:
            raise ValueError(f"teacher logits {tuple(teacher.shape)} do not match the student's {tuple(logits.shape)}")
        teacher = teacher.to(logits.device)
        kd = mse_distill(logits, teacher) if self.kd == "mse" else kl_distill(logits, teacher, self.temperature)
        return {"loss": re + self.weight * kd, "re_loss": re, "kd_loss": kd}
