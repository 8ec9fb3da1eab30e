"""Chunked encoding: window plan, overlap averaging on a constructed case, long documents."""
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from kddocre_ray.model.encoder import chunk_starts, encode


def test_chunk_starts_cover_everything_with_overlap():
    assert chunk_starts(4, 4, 2) == [0]
    assert chunk_starts(10, 4, 2) == [0, 2, 4, 6]
    assert chunk_starts(11, 4, 2) == [0, 2, 4, 6, 7]  # the last window ends exactly at n
    for n in range(1, 2000, 37):
        starts = chunk_starts(n, 510, 128)
        covered = set()
        for s in starts:
            covered |= set(range(s, min(s + 510, n)))
        assert covered == set(range(n))
        assert all(b - a <= 510 - 128 for a, b in zip(starts, starts[1:]))
    with pytest.raises(ValueError):
        chunk_starts(100, 10, 10)


class FakeEncoder(nn.Module):
    """Context-free: hidden state = float(token id); attention of every query = first content id
    of its chunk / 100. So averaged outputs are predictable by hand."""

    config = SimpleNamespace(hidden_size=1)

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, input_ids, attention_mask, output_attentions):
        hidden = input_ids.float()[..., None] * self.w
        b, n = input_ids.shape
        att = (input_ids[:, 1].float() / 100)[:, None, None, None].expand(b, 2, n, n) * attention_mask[:, None, None, :]
        return SimpleNamespace(last_hidden_state=hidden, attentions=(att,))


def test_overlap_averaging_constructed_case():
    """Content ids 11..16 (n=6), window 4, overlap 2: chunks cover content [0,4) and [2,6),
    i.e. document positions 1-4 and 3-6; positions 3-4 are in both."""
    doc = [1, 11, 12, 13, 14, 15, 16, 2]
    [(seq, att)] = encode(FakeEncoder(), [doc], max_length=6, overlap=2, pad_id=0)
    assert seq[:, 0].tolist() == [float(x) for x in doc]  # context-free states survive averaging
    a, b = 0.11, 0.13  # attention value of chunk 0 and chunk 1
    assert att.shape == (2, 8, 8)
    assert att[0, 1, 2].item() == pytest.approx(a)  # only chunk 0 sees (1, 2)
    assert att[0, 5, 6].item() == pytest.approx(b)  # only chunk 1 sees (5, 6)
    assert att[0, 3, 4].item() == pytest.approx((a + b) / 2)  # both: averaged
    assert att[0, 0, 7].item() == pytest.approx((a + b) / 2)  # CLS and SEP are in every chunk
    assert att[0, 1, 6].item() == 0.0  # never in one window together


def test_batching_does_not_change_a_document():
    """A short document encodes the same alone and next to a long, chunked one (padding masked)."""
    enc = FakeEncoder()
    short, long = [1, 30, 31, 2], [1, *range(40, 60), 2]
    [(s_alone, a_alone)] = encode(enc, [short], 8, 2, 0)
    (s_b, a_b), _ = encode(enc, [short, long], 8, 2, 0)
    assert torch.equal(s_alone, s_b) and torch.equal(a_alone, a_b)


def test_long_document_real_tokenizer(tokenizer, schema):
    """A document of well over 512 subwords keeps every entity and gives finite logits."""
    from kddocre_ray.config import ModelConfig
    from kddocre_ray.data.features import doc_features
    from kddocre_ray.model.docre import DocREModel
    from kddocre_ray.model.encoder import load_encoder

    words = [f"word{i % 50}" for i in range(1400)]
    ents = [[{"name": words[p], "pos": [p, p + 1], "sent_id": 0, "type": "MISC"}] for p in range(0, 1400, 100)]
    doc = {"title": "long", "sents": [words], "vertexSet": ents, "labels": []}
    f = doc_features(doc, tokenizer, schema)
    assert len(f.input_ids) > 1500 and f.n_entities == 14
    model = DocREModel(load_encoder("tiny-random"), ModelConfig(encoder="tiny-random", axial_layers=1),
                       schema.num_classes, tokenizer.pad_token_id)
    with torch.no_grad():
        logits = model([f])
    assert logits.shape == (14 * 13, schema.num_classes)
    assert torch.isfinite(logits).all()


def test_an_encoder_saved_in_half_precision_loads_in_fp32(tmp_path, tokenizer):
    """A user's encoder folder may hold fp16 weights (transformers 5 would keep them fp16); the
    head is fp32, so the encoder must load in fp32 too, values unchanged."""
    from kddocre_ray.model.encoder import load_encoder

    half = load_encoder("tiny-random").half()
    half.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded = load_encoder(str(tmp_path))
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    torch.testing.assert_close(loaded.embeddings.word_embeddings.weight,
                               half.embeddings.word_embeddings.weight.float(), rtol=0, atol=0)
