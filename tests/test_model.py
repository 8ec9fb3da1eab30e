"""The model: output shapes, and invariance to what a document is batched with (padding of
chunks and of the pair table is masked, so batching must not change any document's logits)."""
import pytest
import torch

from conftest import make_doc
from kddocre_ray.config import ModelConfig
from kddocre_ray.data.features import doc_features
from kddocre_ray.model.axial import AxialAttention
from kddocre_ray.model.docre import DocREModel
from kddocre_ray.model.encoder import load_encoder


@pytest.fixture(scope="module", params=[0, 2], ids=["atlop-head", "axial"])
def model(request, schema, tokenizer):
    cfg = ModelConfig(encoder="tiny-random", axial_layers=request.param, max_length=64, chunk_overlap=16)
    return DocREModel(load_encoder("tiny-random"), cfg, schema.num_classes, tokenizer.pad_token_id).eval()


def test_logits_cover_real_pairs_only(model, tokenizer, schema, sample_docs):
    feats = [doc_features(d, tokenizer, schema) for d in sample_docs[:3]]
    with torch.no_grad():
        logits = model(feats)
    assert logits.shape == (sum(f.n_entities * (f.n_entities - 1) for f in feats), schema.num_classes)


def test_batch_invariance(model, tokenizer, schema, sample_docs):
    small = doc_features(make_doc(), tokenizer, schema)
    big = doc_features(sample_docs[0], tokenizer, schema)  # more entities and several chunks
    with torch.no_grad():
        alone = model([small])
        together = model([small, big])[: len(alone)]
    torch.testing.assert_close(alone, together, rtol=1e-4, atol=1e-5)


def test_single_entity_document_has_no_pairs(model, tokenizer, schema):
    doc = make_doc(labels=[])
    doc["vertexSet"] = doc["vertexSet"][:1]
    with torch.no_grad():
        assert model([doc_features(doc, tokenizer, schema)]).shape == (0, schema.num_classes)


def test_head_parameters_exclude_encoder(model):
    head = {id(p) for p in model.head_parameters()}
    assert head and not head & {id(p) for p in model.encoder.parameters()}


def test_axial_keeps_padding_and_self_pairs_zero():
    axial = AxialAttention(dim=8, heads=2, layers=2)
    x = torch.randn(2, 4, 4, 8)
    n = torch.tensor([4, 2])
    valid = torch.zeros(2, 4, 4, dtype=torch.bool)
    valid[0] = ~torch.eye(4, dtype=torch.bool)
    valid[1, :2, :2] = ~torch.eye(2, dtype=torch.bool)
    x = x * valid[..., None]
    out = axial(x, n)
    assert torch.isfinite(out).all()
    assert (out[~valid] == 0).all()
    # entities beyond n are invisible: changing padding cells does not change real cells
    x2 = x.clone()
    x2[1, 3, :] = 5.0
    torch.testing.assert_close(axial(x2, n)[1, :2, :2], out[1, :2, :2])
