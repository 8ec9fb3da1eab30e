"""Axial attention over the n x n entity-pair table (KD-DocRE).

Each layer lets a pair (h, t) attend to the pairs in its row (h, *) and then in its column
(*, t), so evidence for one relation can inform another that shares an entity: the two-hop
reasoning that single-pair classifiers miss. Padding entities and self-pairs are masked as keys
and their outputs kept at zero.
"""
from __future__ import annotations

import torch
from torch import nn


class AxialLayer(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.norm_row, self.norm_col = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.row = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.col = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)

    @staticmethod
    def _attend(attn: nn.MultiheadAttention, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Self-attention along the last table axis: x (B, n, n, d), valid (B, n, n)."""
        b, n, _, d = x.shape
        seqs = x.reshape(b * n, n, d)
        pad = ~valid.reshape(b * n, n)
        pad = pad & ~pad.all(1, keepdim=True)  # a row with no valid key: outputs are zeroed anyway
        out, _ = attn(seqs, seqs, seqs, key_padding_mask=pad, need_weights=False)
        return out.reshape(b, n, n, d) * valid[..., None]

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        x = x + self._attend(self.row, self.norm_row(x), valid)
        xt = x.transpose(1, 2)
        xt = xt + self._attend(self.col, self.norm_col(xt), valid.transpose(1, 2))
        return xt.transpose(1, 2)


class AxialAttention(nn.Module):
    def __init__(self, dim: int, heads: int, layers: int, dropout: float = 0.0):
        super().__init__()
        self.layers = nn.ModuleList(AxialLayer(dim, heads, dropout) for _ in range(layers))

    def forward(self, x: torch.Tensor, n_entities: torch.Tensor) -> torch.Tensor:
        """x (B, n, n, d) pair table; n_entities (B,) real entities per document."""
        n = x.shape[1]
        ar = torch.arange(n, device=x.device)
        ent = ar[None, :] < n_entities[:, None]
        valid = ent[:, :, None] & ent[:, None, :] & (ar[:, None] != ar[None, :])
        for layer in self.layers:
            x = layer(x, valid)
        return x
