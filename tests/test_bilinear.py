"""The sliced grouped bilinear computes exactly ATLOP's materialized one, gradients included."""
import pytest
import torch
from torch import nn

from kddocre_ray.model.bilinear import GroupedBilinear


def reference(zh, zt, weight, bias, k):
    """ATLOP's formulation: materialize every pair's block-wise outer product, then a linear map."""
    p, bs = zh.shape[0], zh.shape[1] // k
    bl = (zh.view(p, k, bs, 1) * zt.view(p, k, 1, bs)).reshape(p, k * bs * bs)
    return nn.functional.linear(bl, weight, bias)


@pytest.mark.parametrize("chunk", [1, 3, 7, 100])  # P = 7: slices that divide it, do not, and exceed it
def test_matches_materialized_bilinear_values_and_gradients(chunk):
    torch.manual_seed(0)
    layer = GroupedBilinear(emb_size=6, block_size=2, out_features=5, chunk=chunk).double()
    zh = torch.randn(7, 6, dtype=torch.double, requires_grad=True)
    zt = torch.randn(7, 6, dtype=torch.double, requires_grad=True)
    out = layer(zh, zt)
    ref = reference(zh, zt, layer.weight, layer.bias, k=3)
    assert out.shape == (7, 5) and torch.allclose(out, ref)
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, [zh, zt, layer.weight, layer.bias], g)
    ref_grads = torch.autograd.grad(ref, [zh, zt, layer.weight, layer.bias], g)
    for a, b in zip(grads, ref_grads):
        assert torch.allclose(a, b)


def test_gradcheck():
    torch.manual_seed(1)
    layer = GroupedBilinear(emb_size=4, block_size=2, out_features=3, chunk=2).double()
    zh = torch.randn(5, 4, dtype=torch.double, requires_grad=True)
    zt = torch.randn(5, 4, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: layer(a, b), (zh, zt))


def test_parameters_named_and_shaped_like_linear():
    """Checkpoints written with ATLOP's nn.Linear head load into this layer and back."""
    layer = GroupedBilinear(emb_size=8, block_size=4, out_features=3)
    linear = nn.Linear(8 * 4, 3)
    assert {k: v.shape for k, v in layer.state_dict().items()} == {k: v.shape for k, v in linear.state_dict().items()}


def test_bf16_autocast_casts_once_and_keeps_fp32_master_gradients():
    torch.manual_seed(2)
    layer = GroupedBilinear(emb_size=64, block_size=16, out_features=8, chunk=5)
    zh, zt = torch.randn(12, 64, requires_grad=True), torch.randn(12, 64, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(zh, zt)
    assert out.dtype == torch.bfloat16
    ref = reference(zh, zt, layer.weight, layer.bias, k=4)
    assert torch.allclose(out.float(), ref, rtol=0.05, atol=0.05)
    out.float().sum().backward()
    assert layer.weight.grad.dtype == torch.float32 and zh.grad.dtype == torch.float32
    assert torch.isfinite(layer.weight.grad).all() and layer.weight.grad.abs().sum() > 0


def test_bf16_weight_gradient_as_accurate_as_one_big_matmul():
    """Summing many slices' products must not add bf16 roundings: against the exact fp32
    gradient, the sliced layer's error is of the order of the materialized bf16 layer's."""
    torch.manual_seed(3)
    layer = GroupedBilinear(emb_size=64, block_size=16, out_features=8, chunk=4)  # 16 slices
    zh, zt, g = torch.randn(64, 64), torch.randn(64, 64), torch.randn(64, 8)

    def weight_grad(bf16: bool, sliced: bool) -> torch.Tensor:
        layer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = layer(zh, zt) if sliced else reference(zh, zt, layer.weight, layer.bias, 4)
        (out.float() * g).sum().backward()
        return layer.weight.grad.clone()

    exact = weight_grad(bf16=False, sliced=False)
    materialized = weight_grad(bf16=True, sliced=False)
    sliced = weight_grad(bf16=True, sliced=True)
    assert sliced.dtype == torch.float32
    assert (sliced - exact).abs().max() <= 2 * (materialized - exact).abs().max()
