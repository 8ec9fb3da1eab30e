"""Losses against small cases worked out by hand (classes: [TH, r1, r2])."""
import math

import pytest
import torch

from kddocre_ray.config import LossConfig
from kddocre_ray.losses import afl_loss, atl_loss, bce_loss, kl_distill, make_loss, mse_distill

LOGITS = torch.tensor([[0.0, 1.0, -1.0]])  # TH 0, r1 +1, r2 -1
POS_R1 = torch.tensor([[0.0, 1.0, 0.0]])
NA = torch.tensor([[1.0, 0.0, 0.0]])
def sp(x):
    return math.log1p(math.exp(x))  # softplus: -log sigmoid(-x)


def test_atl_positive_pair():
    """ATL: r1 beats TH in a softmax over {TH, r1}; TH beats r2 in a softmax over {TH, r2}."""
    expected = sp(-1.0) + sp(-1.0)  # -log(e/(1+e)) + -log(1/(1+e^-1))
    assert atl_loss(LOGITS, POS_R1).item() == pytest.approx(expected, rel=1e-6)


def test_atl_na_pair_ranks_th_above_all():
    expected = math.log(1 + math.e + math.exp(-1))
    assert atl_loss(LOGITS, NA).item() == pytest.approx(expected, rel=1e-6)


def test_afl_paper_weight():
    """AFL: -(1-P)^g log P with P = sigmoid(l_r1 - l_TH), plus TH over negatives."""
    p = 1 / (1 + math.exp(-1))
    expected = (1 - p) ** 0.5 * -math.log(p) + sp(-1.0)
    assert afl_loss(LOGITS, POS_R1, gamma=0.5).item() == pytest.approx(expected, rel=1e-6)


def test_afl_official_weight_adds_one():
    p = 1 / (1 + math.exp(-1))
    expected = (1 + (1 - p) ** 1.0) * -math.log(p) + sp(-1.0)
    assert afl_loss(LOGITS, POS_R1, gamma=1.0, weight="official").item() == pytest.approx(expected, rel=1e-6)


def test_afl_gamma_zero_equals_atl_for_one_positive():
    """With one positive, its softmax against TH alone is ATL's, so the two coincide at gamma 0."""
    logits = torch.randn(5, 4)
    labels = torch.zeros(5, 4)
    labels[torch.arange(5), torch.randint(1, 4, (5,))] = 1
    assert afl_loss(logits, labels, gamma=0.0).item() == pytest.approx(atl_loss(logits, labels).item(), rel=1e-5)


def test_afl_two_positives_each_against_th():
    """Each positive is ranked against TH alone, not against the other positive (unlike ATL)."""
    logits = torch.tensor([[0.0, 2.0, 1.0]])
    labels = torch.tensor([[0.0, 1.0, 1.0]])
    terms = [(1 - p) ** 0.5 * -math.log(p) for p in (1 / (1 + math.exp(-2)), 1 / (1 + math.exp(-1)))]
    expected = sum(terms) + 0.0  # no negatives: TH is alone, -log 1 = 0
    assert afl_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_afl_gradients_stay_finite_at_large_margins(gamma):
    """A class 40 logits above TH has P = 1 in fp32: the focal weight (1 - P)^gamma must still have
    a finite gradient (with (1 - P).pow(0.5) it was inf, and the whole step NaN)."""
    logits = torch.tensor([[0.0, 40.0, -40.0, 2.0], [0.0, -3.0, 45.0, 1.0]], requires_grad=True)
    labels = torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    loss = afl_loss(logits, labels, gamma=gamma)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    # pair 1: positive r1 at margin 40 costs ~0; TH against negatives r2 (-40) and r3 (2)
    # (pair 2 the same with r2 at 45, negatives -3 and 1): -log P(TH) = log(1 + sum exp(negatives))
    expected = (math.log(1 + math.exp(-40) + math.exp(2)) + math.log(1 + math.exp(-3) + math.exp(1))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_afl_na_pair_equals_atl():
    assert afl_loss(LOGITS, NA).item() == pytest.approx(atl_loss(LOGITS, NA).item(), rel=1e-6)


def test_losses_average_over_pairs():
    two = torch.cat([LOGITS, LOGITS]), torch.cat([POS_R1, NA])
    assert atl_loss(*two).item() == pytest.approx((atl_loss(LOGITS, POS_R1) + atl_loss(LOGITS, NA)).item() / 2)


def test_bce_ignores_th_column():
    expected = sp(-1.0) + sp(-1.0)  # -log sig(1) for r1, -log(1 - sig(-1)) for r2
    assert bce_loss(LOGITS, POS_R1).item() == pytest.approx(expected, rel=1e-6)
    assert bce_loss(torch.tensor([[9.0, 1.0, -1.0]]), POS_R1).item() == pytest.approx(expected, rel=1e-6)


def test_losses_are_fp32_from_bf16_logits():
    out = afl_loss(LOGITS.bfloat16(), POS_R1)
    assert out.dtype == torch.float32


def test_mse_distill():
    assert mse_distill(torch.tensor([[1.0, 2.0]]), torch.zeros(1, 2)).item() == pytest.approx(2.5)


def test_kl_distill_hand_case():
    """Teacher uniform over 2 classes, student [1/4, 3/4]: KL = .5 ln 2 + .5 ln(2/3)."""
    s, t = torch.tensor([[0.0, math.log(3)]]), torch.zeros(1, 2)
    assert kl_distill(s, t).item() == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(2 / 3), rel=1e-6)
    q = 1 / (1 + math.sqrt(3))  # at T=2 the student is [q, 1-q]
    expected = 4 * (0.5 * math.log(0.5 / q) + 0.5 * math.log(0.5 / (1 - q)))
    assert kl_distill(s, t, temperature=2.0).item() == pytest.approx(expected, rel=1e-6)
    assert kl_distill(t, t).item() == pytest.approx(0.0, abs=1e-7)


def test_make_loss_dispatch():
    assert make_loss(LossConfig(name="atl"))(LOGITS, POS_R1).item() == pytest.approx(atl_loss(LOGITS, POS_R1).item())
    assert make_loss(LossConfig(name="afl", gamma=0.5))(LOGITS, POS_R1).item() == pytest.approx(
        afl_loss(LOGITS, POS_R1, 0.5).item())
    with pytest.raises(ValueError):
        make_loss(LossConfig(name="focal"))
