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
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from .. import layout
from ..errors import InputError
from ..storage import Location, check_files, location, parquet_files, read_json
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
            raise InputError(f"{size} values, expected n(n-1)C = {n}*{n - 1}*{num_classes}", path=where,
                             index=table.column("doc_index")[i].as_py(), title=table.column("title")[i].as_py(),
                             field=TEACHER_LOGITS, what="document")
        out.append(torch.from_numpy(values[offsets[i]:offsets[i + 1]].astype(np.float32)).view(n * (n - 1), num_classes))
    return out


def check_rows(folder: str | Location, num_classes: int, with_teacher: bool) -> int:
    """The door of a rows folder (`data.train_rows`): every Parquet file readable with this
    layout's columns (and teacher logits when a student learns from them); returns the row count.
    A folder a pipeline stage wrote (its manifest lists its files) is checked against the sizes
    it recorded, and the footers; any other folder is read row by row (`_check_values`), a batch
    at a time. Errors name the file, the document and the field."""
    folder = location(folder)
    fs, files = parquet_files(folder)
    if not files:
        raise InputError("no Parquet files (expected the rows an ingest or soft-label stage wrote)", path=folder)
    manifest = read_json(folder / layout.MANIFEST) if (folder / layout.MANIFEST).exists() else None
    recorded = manifest.get("files") if isinstance(manifest, dict) else None
    if isinstance(recorded, dict):
        for name, what in check_files(folder, recorded)[:1]:
            raise InputError(f"{what}, unlike when its stage wrote it", path=folder / name)
    want = SOFT_LABEL_SCHEMA if with_teacher else FEATURE_SCHEMA
    rows = 0
    for info in files:
        where = folder / info.path.rsplit("/", 1)[-1]
        try:
            meta = pq.read_metadata(info.path, filesystem=fs)
            schema = meta.schema.to_arrow_schema()
        except (OSError, pa.ArrowException) as e:
            raise InputError(f"not a readable Parquet file ({str(e).splitlines()[0][:200]})", path=where) from None
        for f in want:
            if f.name not in schema.names:
                hint = " (rows without soft labels: point data.train_rows at a soft-label stage, or set distill.kd=none)" \
                    if f.name == TEACHER_LOGITS else ""
                raise InputError(f"no column {f.name}{hint}", path=where)
            if schema.field(f.name).type != f.type:
                raise InputError(f"column {f.name} is {schema.field(f.name).type}, expected {f.type}", path=where)
        rows += meta.num_rows
        if not isinstance(recorded, dict):
            with fs.open_input_file(info.path) as handle:
                for batch in pq.ParquetFile(handle).iter_batches(batch_size=1024, columns=want.names):
                    _check_values(batch, num_classes, with_teacher, where)
    if rows == 0:
        raise InputError("no rows", path=folder)
    return rows


def _check_values(batch: pa.RecordBatch, num_classes: int, with_teacher: bool, where: Location) -> None:
    """What each row's values must satisfy for the loss to read them: two or more entities, one
    position list per entity, positions inside the tokens, whole (h, t, class) triples in range,
    n(n-1)C teacher logits."""
    n = batch.column("n_entities").to_numpy(zero_copy_only=False).astype(np.int64)
    tokens = batch.column("n_tokens").to_numpy(zero_copy_only=False).astype(np.int64)
    problems = {"n_entities": n < 2,
                "n_tokens": pc.list_value_length(batch.column("input_ids")).to_numpy(zero_copy_only=False) != tokens,
                "entity_pos": pc.list_value_length(batch.column("entity_pos")).to_numpy(zero_copy_only=False) != n,
                "labels": pc.list_value_length(batch.column("labels")).to_numpy(zero_copy_only=False) % 3 != 0}
    pos = pc.list_flatten(batch.column("entity_pos"))  # per entity, its mentions' positions
    entity_row = pc.list_parent_indices(batch.column("entity_pos")).to_numpy(zero_copy_only=False)
    per_entity = pc.list_value_length(pos).to_numpy(zero_copy_only=False)
    flat = pc.list_flatten(pos).to_numpy(zero_copy_only=False)
    value_row = np.repeat(entity_row, per_entity)
    bad_pos = np.zeros(len(n), bool)
    np.logical_or.at(bad_pos, value_row, (flat < 0) | (flat >= tokens[value_row]))
    bad_pos |= np.bincount(entity_row[per_entity == 0], minlength=len(n)) > 0  # an entity with no mention
    problems["entity_pos"] |= bad_pos
    if not problems["labels"].any():
        labels = pc.list_flatten(batch.column("labels")).to_numpy(zero_copy_only=False).reshape(-1, 3)
        label_row = pc.list_parent_indices(batch.column("labels")).to_numpy(zero_copy_only=False)[::3]
        bad = (labels[:, :2] < 0).any(1) | (labels[:, :2] >= n[label_row, None]).any(1) | (labels[:, 0] == labels[:, 1])
        bad |= (labels[:, 2] < 1) | (labels[:, 2] >= num_classes)
        np.logical_or.at(problems["labels"], label_row, bad)
    if with_teacher:
        size = pc.list_value_length(batch.column(TEACHER_LOGITS)).to_numpy(zero_copy_only=False)
        problems[TEACHER_LOGITS] = size != n * (n - 1) * num_classes
    expected = {"n_entities": "at least 2 entities", "n_tokens": "the length of input_ids",
                "entity_pos": "one non-empty list of positions inside the tokens per entity",
                "labels": f"(h, t, class) triples with h != t < n_entities and 1 <= class < {num_classes}",
                TEACHER_LOGITS: f"n_entities*(n_entities-1)*{num_classes} values"}
    for column, bad in problems.items():
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            k = int(bad.sum())
            raise InputError(f"expected {expected[column]} ({k} such row{'s' * (k != 1)} in this batch of {len(n)})",
                             path=where, index=batch.column("doc_index")[i].as_py(),
                             title=batch.column("title")[i].as_py(), field=column, what="document")
