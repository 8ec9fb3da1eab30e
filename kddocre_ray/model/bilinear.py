"""ATLOP's grouped bilinear layer, computed a slice of pairs at a time.

For each pair the layer forms the block-wise outer product of head and tail embeddings
(k groups of bs x bs: a 49,152-wide feature for emb 768 / block 64) and applies one linear map
to it. Written with plain tensor ops, autograd keeps that whole (pairs x 49,152) feature for the
backward pass and makes two more of its size there (the feature's gradient, and the broadcast
product inside the outer product's backward): ~150 MB each in bf16 for a batch of four
Re-DocRED documents (~1,600 pairs), ~0.7 GB each for four 42-entity DocRED documents; on a CPU
the allocator also hands each of them fresh, zero-filled pages every step.

Here the forward keeps only the two embeddings, and forward and backward build the outer product
one slice of `chunk` pairs at a time: the same matrix products, with no feature-sized tensor
larger than one slice.
"""
from __future__ import annotations

import torch
from torch import nn


def block_outer(zh: torch.Tensor, zt: torch.Tensor, k: int) -> torch.Tensor:
    """Block-wise outer product: (c, k*bs) x (c, k*bs) -> (c, k*bs*bs)."""
    c, bs = zh.shape[0], zh.shape[1] // k
    return (zh.view(c, k, bs, 1) * zt.view(c, k, 1, bs)).view(c, k * bs * bs)


class _GroupedBilinear(torch.autograd.Function):
    """Inputs in their own dtype (the weight is the fp32 master under autocast); the math runs in
    `dtype`. Gradients come back in the inputs' dtypes: the weight's is summed over slices in
    fp32 and never rounded to bf16 on its way to the fp32 master weight."""

    @staticmethod
    def forward(ctx, zh, zt, weight, bias, k: int, chunk: int, dtype: torch.dtype):
        zh, zt, w, b = (x.to(dtype) for x in (zh, zt, weight, bias))
        out = torch.empty(zh.shape[0], w.shape[0], dtype=dtype, device=zh.device)
        for s in range(0, zh.shape[0], chunk):
            torch.addmm(b, block_outer(zh[s:s + chunk], zt[s:s + chunk], k), w.t(), out=out[s:s + chunk])
        ctx.save_for_backward(zh, zt, w)
        ctx.k, ctx.chunk, ctx.weight_dtype = k, chunk, weight.dtype
        return out

    @staticmethod
    def backward(ctx, grad_out):
        zh, zt, w = ctx.saved_tensors
        k, chunk = ctx.k, ctx.chunk
        grad_out = grad_out.to(w.dtype)
        acc = torch.promote_types(ctx.weight_dtype, torch.float32)
        grad_w, part = None, None
        grad_zh, grad_zt = torch.empty_like(zh), torch.empty_like(zt)
        for s in range(0, zh.shape[0], chunk):
            h, t, g = zh[s:s + chunk], zt[s:s + chunk], grad_out[s:s + chunk]
            c, bs = h.shape[0], h.shape[1] // k
            bl = block_outer(h, t, k)
            if grad_w is None:
                grad_w = (g.t() @ bl).to(acc)
            elif acc == w.dtype:
                grad_w.addmm_(g.t(), bl)
            else:  # bf16 / fp16 product of one slice, added in fp32
                part = torch.mm(g.t(), bl, out=part)
                grad_w += part
            g_bl = (g @ w).view(c * k, bs, bs)  # d loss / d outer product, this slice
            grad_zh[s:s + chunk] = torch.bmm(g_bl, t.reshape(c * k, bs, 1)).view(c, k * bs)
            grad_zt[s:s + chunk] = torch.bmm(g_bl.transpose(1, 2), h.reshape(c * k, bs, 1)).view(c, k * bs)
        return grad_zh, grad_zt, grad_w, grad_out.sum(0, dtype=acc), None, None, None


class GroupedBilinear(nn.Module):
    """out = W · vec(zh_g ⊗ zt_g for each group g) + b: the same function, parameters and
    parameter names as ATLOP's `nn.Linear(emb_size * block_size, out)` applied to the
    materialized outer products, so checkpoints of either load into the other."""

    def __init__(self, emb_size: int, block_size: int, out_features: int, chunk: int = 512):
        super().__init__()
        if emb_size % block_size:
            raise ValueError(f"emb_size {emb_size} must be a multiple of block_size {block_size}")
        self.k, self.chunk = emb_size // block_size, chunk
        linear = nn.Linear(emb_size * block_size, out_features)  # its initialization
        self.weight, self.bias = linear.weight, linear.bias

    def forward(self, zh: torch.Tensor, zt: torch.Tensor) -> torch.Tensor:
        """zh, zt (P, emb_size) -> (P, out_features), in autocast's dtype where it is on (as a
        linear layer would be), else in the weight's."""
        device = zh.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else self.weight.dtype
        with torch.autocast(device, enabled=False):
            return _GroupedBilinear.apply(zh, zt, self.weight, self.bias, self.k, self.chunk, dtype)
