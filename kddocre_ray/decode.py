"""Turn pair logits into relation triples with the threshold-class rule."""
from __future__ import annotations

from collections.abc import Iterator

import torch

from .data.features import Feature, pair_index


def decode(logits: torch.Tensor, num_labels: int = 4, fixed_threshold: bool = False,
           min_score: float = 0.0) -> torch.Tensor:
    """0/1 predictions (P, C): relations scoring above TH (or above 0 for a BCE model) by more than
    `min_score` (0: the model's own decision; lower keeps less certain relations, higher fewer), at
    most `num_labels` per pair (-1 = all); column 0 marks pairs left with no relation."""
    logits = logits.float()
    th = (torch.zeros_like(logits[:, :1]) if fixed_threshold else logits[:, :1]) + min_score
    keep = logits > th
    if 0 < num_labels < logits.shape[1]:
        kth = logits.topk(num_labels, dim=1).values[:, -1:]
        keep &= logits >= kth
    keep[:, 0] = False
    out = keep.float()
    out[:, 0] = (out.sum(1) == 0).float()
    return out


def relations(keep: torch.Tensor, n_entities: int) -> Iterator[tuple[int, int, int, int]]:
    """(pair row, head, tail, relation id) of each relation `keep` (one document's rows of
    `decode`'s output) marks, in pair_index order; column 0 (no relation) is never one."""
    pairs = pair_index(n_entities)
    rows, cols = keep[:, 1:].nonzero(as_tuple=True)
    for p, c in zip(rows.tolist(), cols.tolist()):
        h, t = pairs[p].tolist()
        yield p, h, t, c + 1


def to_triples(pred: torch.Tensor, f: Feature, id2rel: dict[int, str]) -> list[dict]:
    """DocRED submission records for one document's predictions (its rows of `decode`'s output)."""
    return [{"title": f.title, "h_idx": h, "t_idx": t, "r": id2rel[r], "evidence": []}
            for _, h, t, r in relations(pred, f.n_entities)]
