"""Decoding: the TH rule, the top-k cap and the BCE fixed threshold, and triple records."""
import torch

from kddocre_ray.data.features import Feature, per_document
from kddocre_ray.decode import decode, relations, to_triples


def test_th_rule_with_top_k():
    logits = torch.tensor([[0.0, 1.0, -1.0, 2.0], [0.0, -1.0, -2.0, -3.0]])
    assert decode(logits, num_labels=-1).tolist() == [[0, 1, 0, 1], [1, 0, 0, 0]]
    assert decode(logits, num_labels=1).tolist() == [[0, 0, 0, 1], [1, 0, 0, 0]]


def test_top_k_never_admits_th_or_below_th():
    logits = torch.tensor([[3.0, 1.0, 2.0, 4.0]])  # only r3 beats TH even though k=2
    assert decode(logits, num_labels=2).tolist() == [[0, 0, 0, 1]]


def test_fixed_threshold_ignores_th_logit():
    logits = torch.tensor([[5.0, 1.0, -1.0, 2.0]])
    assert decode(logits, num_labels=-1, fixed_threshold=True).tolist() == [[0, 1, 0, 1]]


def test_min_score_moves_the_threshold_by_hand():
    logits = torch.tensor([[0.0, 1.0, -1.0, 2.0], [0.0, -1.0, -2.0, -3.0]])
    # above TH by more than 1.5: only r3 of the first pair
    assert decode(logits, num_labels=-1, min_score=1.5).tolist() == [[0, 0, 0, 1], [1, 0, 0, 0]]
    # above TH - 1.5: r1, r2, r3 of the first pair, r1 of the second (-1 > -1.5)
    assert decode(logits, num_labels=-1, min_score=-1.5).tolist() == [[0, 1, 1, 1], [0, 1, 0, 0]]
    # the top-k cap still holds, over every class as in ATLOP: in the second pair TH itself is the
    # top one, so with k=1 that pair keeps no relation however low the threshold
    assert decode(logits, num_labels=1, min_score=-10).tolist() == [[0, 0, 0, 1], [1, 0, 0, 0]]
    assert decode(logits, num_labels=-1, fixed_threshold=True, min_score=1.5).tolist() == [[0, 0, 0, 1], [1, 0, 0, 0]]


def test_to_triples_maps_pairs_in_row_major_order():
    """Pairs of 3 entities: (0,1) (0,2) (1,0) (1,2) (2,0) (2,1); the 6th row is (2, 1)."""
    f = Feature("d", [101, 102], [[1], [2], [3]], [])
    pred = torch.zeros(6, 3)
    pred[:, 0] = 1
    pred[5] = torch.tensor([0, 0, 1.0])
    triples = to_triples(pred, f, {0: "Na", 1: "P1", 2: "P2"})
    assert triples == [{"title": "d", "h_idx": 2, "t_idx": 1, "r": "P2", "evidence": []}]


def test_a_batch_splits_per_document_by_each_ones_own_pairs():
    """Two documents of 3 and 2 entities: rows 0-5 are the first's pairs, rows 6-7 the second's
    (0,1) and (1,0)."""
    a, b = Feature("a", [101], [[1], [2], [3]], []), Feature("b", [101], [[1], [2]], [])
    pred = torch.zeros(8, 3)
    pred[:, 0] = 1
    pred[1] = torch.tensor([0, 1.0, 1.0])  # a: (0, 2) holds P1 and P2
    pred[7] = torch.tensor([0, 1.0, 0])  # b: (1, 0) holds P1
    parts = per_document(pred, [a, b])
    assert [p.shape[0] for p in parts] == [a.n_pairs, b.n_pairs] == [6, 2]
    triples = [t for f, p in zip([a, b], parts) for t in to_triples(p, f, {0: "Na", 1: "P1", 2: "P2"})]
    assert [(r["title"], r["h_idx"], r["t_idx"], r["r"]) for r in triples] == \
        [("a", 0, 2, "P1"), ("a", 0, 2, "P2"), ("b", 1, 0, "P1")]


def test_relations_never_yields_the_no_relation_column():
    keep = torch.tensor([[1.0, 0, 0], [1.0, 1.0, 0]])  # column 0 set beside a relation still is no relation
    assert list(relations(keep, 2)) == [(1, 1, 0, 1)]
