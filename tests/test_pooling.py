"""Entity pooling and localized context against values worked out by hand."""
import math

import torch

from kddocre_ray.model.pooling import entity_pooling, localized_context


def test_entity_pooling_logsumexp_and_mean_attention_over_each_entitys_own_mentions():
    seq = torch.tensor([[0.0, 1.0], [2.0, 0.0], [1.0, 1.0]])  # 3 tokens, d = 2
    att = torch.tensor([[[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.2, 0.2, 0.6]]])  # 1 head, 3 x 3
    emb, ent_att = entity_pooling(seq, att, [[0, 1], [2]])  # entity 0: two mentions, entity 1: one
    assert emb.shape == (2, 2) and ent_att.shape == (2, 1, 3)
    # entity 0: logsumexp over tokens 0 and 1, per dimension
    assert torch.allclose(emb[0], torch.tensor([math.log(1 + math.exp(2)), math.log(math.exp(1) + 1)]))
    assert torch.allclose(emb[1], seq[2])  # one mention: its state, padding ignored
    assert torch.allclose(ent_att[0, 0], torch.tensor([0.25, 0.75, 0.0]))  # mean of rows 0 and 1
    assert torch.allclose(ent_att[1, 0], torch.tensor([0.2, 0.2, 0.6]))  # row 2 alone, not diluted


def test_localized_context_pools_tokens_both_entities_attend_to():
    seq = torch.tensor([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    ent_att = torch.tensor([[[0.5, 0.5, 0.0]], [[0.0, 1.0, 0.0]]])  # (n=2, H=1, N=3)
    ctx = localized_context(seq, ent_att, torch.tensor([[0, 1], [1, 0]]))
    # the product of attentions is (0, 0.5, 0): all weight on token 1 after renormalizing
    expected = seq[1] * 0.5 / (0.5 + 1e-5)
    assert torch.allclose(ctx, expected.expand(2, 2))
