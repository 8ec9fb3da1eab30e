"""Entity and pair representations from the encoder's output (ATLOP)."""
from __future__ import annotations

import torch


def entity_pooling(seq: torch.Tensor, att: torch.Tensor,
                   entity_pos: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per entity: logsumexp of its mentions' start-marker states (a smooth max that still lets
    every mention get gradient) and the mean of those mentions' attention rows.

    seq (N, d), att (H, N, N) -> embeddings (n, d), attention (n, H, N).
    """
    most = max(map(len, entity_pos))
    idx = torch.tensor([p + [-1] * (most - len(p)) for p in entity_pos], device=seq.device)  # (n, m)
    valid = idx >= 0
    idx = idx.clamp(min=0)
    states = seq[idx].masked_fill(~valid[..., None], float("-inf"))  # (n, m, d)
    emb = torch.logsumexp(states.float(), dim=1).to(seq.dtype)
    rows = att[:, idx].permute(1, 0, 2, 3)  # (n, H, m, N)
    w = valid.to(att.dtype)[:, None, :, None]
    ent_att = (rows * w).sum(2) / w.sum(2)
    return emb, ent_att


def localized_context(seq: torch.Tensor, ent_att: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """Context for each pair: tokens both entities attend to (product of their attention,
    averaged over heads, renormalized), pooled from the sequence. (P, d)."""
    ht = (ent_att[pairs[:, 0]] * ent_att[pairs[:, 1]]).mean(1)
    ht = ht / (ht.sum(1, keepdim=True) + 1e-5)
    return ht @ seq
