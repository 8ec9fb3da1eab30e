"""Turn a validated DocRED document into model inputs: subword ids with `*` mention markers.

Every mention is wrapped in `*` markers (ATLOP); the start marker's hidden state stands for the
mention. The whole document becomes one id sequence `[CLS] ... [SEP]` of any length: the encoder
splits it into overlapping windows (model/encoder.py), so nothing is truncated here.
Pairs are implicit: all ordered pairs (h, t), h != t, in row-major order (see `pair_index`).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from .docred import RelSchema

MARKER = "*"


@dataclass
class Feature:
    title: str
    input_ids: list[int]
    entity_pos: list[list[int]]  # per entity, the positions of its mentions' start markers
    labels: list[tuple[int, int, int]]  # (h, t, class id); empty for unlabelled documents

    @property
    def n_entities(self) -> int:
        return len(self.entity_pos)

    @property
    def n_pairs(self) -> int:
        """Its ordered entity pairs: the rows `pair_index` lists, one per row of its logits."""
        return self.n_entities * (self.n_entities - 1)


def doc_features(doc: dict, tokenizer, schema: RelSchema) -> Feature:
    """Tokenize word by word (one batched tokenizer call), inserting markers around mentions."""
    starts, ends = set(), set()
    for entity in doc["vertexSet"]:
        for m in entity:
            starts.add((m["sent_id"], m["pos"][0]))
            ends.add((m["sent_id"], m["pos"][1] - 1))
    words = [w for sent in doc["sents"] for w in sent]
    word_ids = tokenizer(words, add_special_tokens=False)["input_ids"] if words else []
    marker = tokenizer.convert_tokens_to_ids(MARKER)

    ids = [tokenizer.cls_token_id]
    start_of: dict[tuple[int, int], int] = {}  # (sent, word) -> position of its first subword
    k = 0
    for s, sent in enumerate(doc["sents"]):
        for w in range(len(sent)):
            start_of[(s, w)] = len(ids)
            if (s, w) in starts:
                ids.append(marker)
            ids.extend(word_ids[k])
            if (s, w) in ends:
                ids.append(marker)
            k += 1
    ids.append(tokenizer.sep_token_id)

    entity_pos = [[start_of[(m["sent_id"], m["pos"][0])] for m in entity] for entity in doc["vertexSet"]]
    rel2id = schema.rel2id
    labels = sorted({(lab["h"], lab["t"], rel2id[lab["r"]]) for lab in doc.get("labels", [])})
    return Feature(doc["title"], ids, entity_pos, labels)


def pair_index(n: int) -> torch.Tensor:
    """All ordered pairs (h, t), h != t, row-major: shape (n*(n-1), 2)."""
    h, t = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    keep = h != t
    return torch.stack([h[keep], t[keep]], dim=1)


def per_document(rows: torch.Tensor, batch: list[Feature]) -> tuple[torch.Tensor, ...]:
    """A batch's pair rows (concatenated in batch order, as the model returns them), cut per document."""
    return rows.split([f.n_pairs for f in batch])


def label_matrix(f: Feature, num_classes: int) -> torch.Tensor:
    """Multi-hot labels of every pair in `pair_index` order; column 0 (TH / NA) set for no relation."""
    n = f.n_entities
    y = torch.zeros(f.n_pairs, num_classes)
    if f.labels:
        h, t, r = torch.tensor(f.labels).T
        y[h * (n - 1) + t - (t > h).long(), r] = 1.0
    y[:, 0] = (y[:, 1:].sum(1) == 0).float()
    return y


def length_grouped_batches(lengths: list[int], batch_size: int, seed: int) -> list[list[int]]:
    """Batches of documents of similar length, in random order, so padding stays small.

    Lengths get a little random jitter before sorting so batch composition changes by seed.
    """
    rng = random.Random(seed)
    order = sorted(range(len(lengths)), key=lambda i: lengths[i] * (1 + 0.1 * rng.random()))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches
