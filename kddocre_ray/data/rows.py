"""The Parquet layout of a featurized corpus and of its soft labels: one row per document.

| column         | type                 | what |
|----------------|----------------------|------|
| corpus         | string               | fingerprint of the corpus file (sha256 of its bytes, 16 hex) |
| doc_index      | int64                | the document's index in that file (file order, skipped ones counted) |
| title          | string               | DocRED title (for messages only: titles need not be unique) |
| n_entities     | int32                | n; the document has n(n-1) ordered entity pairs |
| n_tokens       | int32                | len(input_ids), for length-grouped batches |
| input_ids      | list<int32>          | `[CLS] ... [SEP]` with `*` mention markers (data/features.py) |
| entity_pos     | list<list<int32>>    | per entity, the positions of its mentions' start markers |
| labels         | list<int32>          | flat (h, t, class id) triples: 3 values per label |
| teacher_logits | list<float16>        | soft-label shards only: n(n-1) x C logits, row-major, pairs in |
|                |                      | `pair_index` order (h-major, h != t), classes in schema order (0 = TH) |

(corpus, doc_index) is the key. A reader checks len(teacher_logits) == n(n-1) * C against
n_entities before using a row. float16 keeps a DocRED-sized document (20 entities, 97 classes)
at 380 x 97 x 2 = 73,720 bytes of logits. Pure pyarrow and torch: knows nothing of Ray.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from .features import Feature

FEATURE_SCHEMA = pa.schema([
    ("corpus", pa.string()),
    ("doc_index", pa.int64()),
    ("title", pa.string()),
    ("n_entities", pa.int32()),
    ("n_tokens", pa.int32()),
    ("input_ids", pa.list_(pa.int32())),
    ("entity_pos", pa.list_(pa.list_(pa.int32()))),
    ("labels", pa.list_(pa.int32())),
])
TEACHER_LOGITS = "teacher_logits"
SOFT_LABEL_SCHEMA = FEATURE_SCHEMA.append(pa.field(TEACHER_LOGITS, pa.list_(pa.float16())))


def feature_table(feats: list[Feature], corpus: str, doc_indices: list[int]) -> pa.Table:
    return pa.Table.from_pydict({
        "corpus": [corpus] * len(feats),
        "doc_index": doc_indices,
        "title": [f.title for f in feats],
        "n_entities": [f.n_entities for f in feats],
        "n_tokens": [len(f.input_ids) for f in feats],
        "input_ids": [f.input_ids for f in feats],
        "entity_pos": [f.entity_pos for f in feats],
        "labels": [[x for triple in f.labels for x in triple] for f in feats],
    }, schema=FEATURE_SCHEMA)


def features_of(table: pa.Table) -> list[Feature]:
    cols = table.select(["title", "input_ids", "entity_pos", "labels"]).to_pydict()
    return [Feature(title, ids, pos, [tuple(flat[i:i + 3]) for i in range(0, len(flat), 3)])
            for title, ids, pos, flat in zip(cols["title"], cols["input_ids"], cols["entity_pos"], cols["labels"])]


def with_teacher_logits(table: pa.Table, logits: list[torch.Tensor]) -> pa.Table:
    """The rows with their teacher logits appended as a float16 list column."""
    flat = [t.to(torch.float16).numpy().reshape(-1) for t in logits]
    offsets = np.zeros(len(flat) + 1, dtype=np.int32)
    np.cumsum([len(x) for x in flat], out=offsets[1:])
    values = pa.array(np.concatenate(flat) if flat else np.zeros(0, np.float16), type=pa.float16())
    column = pa.ListArray.from_arrays(pa.array(offsets), values, type=pa.list_(pa.float16()))
    return table.select(FEATURE_SCHEMA.names).append_column(SOFT_LABEL_SCHEMA.field(TEACHER_LOGITS), column)


def teacher_logits_of(table: pa.Table, num_classes: int, where: str = "soft labels") -> list[torch.Tensor]:
    """Per row, the (n(n-1), C) fp32 teacher logits; a row whose length disagrees with its
    entity count is an error naming the document."""
    column = table.column(TEACHER_LOGITS).combine_chunks()
    offsets = column.offsets.to_numpy()
    values = column.values.to_numpy(zero_copy_only=False)
    n_ent = table.column("n_entities").to_numpy()
    out = []
    for i, n in enumerate(n_ent):
        size = offsets[i + 1] - offsets[i]
        if size != n * (n - 1) * num_classes:
            key = f"corpus {table.column('corpus')[i]} document {table.column('doc_index')[i]} ({table.column('title')[i]})"
            raise ValueError(f"{where}: {key}: {size} teacher logits, expected {n}*{n - 1}*{num_classes}")
        out.append(torch.from_numpy(values[offsets[i]:offsets[i + 1]].astype(np.float32)).view(n * (n - 1), num_classes))
    return out
