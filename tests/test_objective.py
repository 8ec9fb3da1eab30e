"""The training objective L = L_RE + w * L_KD, its parts, and the batch source that feeds it."""
import math

import pytest
import torch

from kddocre_ray.config import DistillConfig, LossConfig
from kddocre_ray.data.features import Feature
from kddocre_ray.train.batches import InMemoryBatches
from kddocre_ray.train.objective import Objective

LOGITS = torch.tensor([[0.0, 1.0, -1.0]])  # TH 0, r1 +1, r2 -1
POS_R1 = torch.tensor([[0.0, 1.0, 0.0]])
TEACHER = torch.tensor([[0.0, 2.0, 1.0]])
def sp(x):
    return math.log1p(math.exp(x))  # softplus


def test_without_teacher_the_loss_is_the_relation_loss():
    parts = Objective(LossConfig(name="atl"))(LOGITS, POS_R1)
    assert set(parts) == {"loss", "re_loss"}
    assert parts["loss"].item() == pytest.approx(2 * sp(-1.0), rel=1e-6)  # ATL by hand (test_losses)


def test_mse_kd_adds_weighted_mean_squared_error():
    """MSE to the teacher: ((0-0)^2 + (1-2)^2 + (-1-1)^2) / 3 = 5/3; loss = ATL + 0.5 * 5/3."""
    parts = Objective(LossConfig(name="atl"), DistillConfig(kd="mse", weight=0.5))(LOGITS, POS_R1, TEACHER)
    assert parts["kd_loss"].item() == pytest.approx(5 / 3, rel=1e-6)
    assert parts["loss"].item() == pytest.approx(2 * sp(-1.0) + 0.5 * 5 / 3, rel=1e-6)


def test_kl_kd_with_temperature():
    """KL(teacher || student) at T=2, times T^2: worked out from the two softmaxes."""
    t = 2.0
    ps = torch.softmax(LOGITS[0] / t, 0)
    pt = torch.softmax(TEACHER[0] / t, 0)
    expected = float((pt * (pt.log() - ps.log())).sum()) * t * t
    parts = Objective(LossConfig(name="atl"), DistillConfig(kd="kl", weight=1.0, temperature=t))(LOGITS, POS_R1, TEACHER)
    assert parts["kd_loss"].item() == pytest.approx(expected, rel=1e-5)


def test_kd_without_teacher_logits_or_with_the_wrong_shape_fails():
    objective = Objective(LossConfig(), DistillConfig(kd="mse"))
    with pytest.raises(ValueError, match="needs the teacher"):
        objective(LOGITS, POS_R1)
    with pytest.raises(ValueError, match="do not match"):
        objective(LOGITS, POS_R1, torch.zeros(2, 3))


def _feat(i: int, n: int) -> Feature:
    return Feature(f"d{i}", list(range(5 + i)), [[1 + k] for k in range(n)], [(0, 1, 2)])


def test_in_memory_batches_carry_the_teacher_rows_of_their_documents():
    """Each batch's teacher tensor is its documents' tables concatenated in batch order, row for
    row with the labels; two ranks take the same number of disjoint batches."""
    feats = [_feat(i, 2 + i % 3) for i in range(10)]
    teacher = [torch.full((f.n_entities * (f.n_entities - 1), 3), float(i)) for i, f in enumerate(feats)]
    seen = []
    counts = []
    for rank in (0, 1):
        source = InMemoryBatches(feats, 3, batch_size=2, seed=1, rank=rank, world=2, teacher=teacher)
        batches = list(source.epoch(0))
        counts.append(len(batches))
        assert len(batches) == len(source) == 2  # 5 batches, 2 ranks: 4 used
        for b in batches:
            assert b.teacher.shape == b.labels.shape
            expected = torch.cat([torch.full((f.n_entities * (f.n_entities - 1),), float(f.title[1:])) for f in b.features])
            assert torch.equal(b.teacher[:, 0], expected)
            seen.extend(f.title for f in b.features)
    assert counts[0] == counts[1] and len(seen) == len(set(seen)) == 8
